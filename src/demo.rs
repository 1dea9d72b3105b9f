//! `auditwarden demo`: the whole job on the built-in simulator, for a new user with no DigiCert
//! account. Starts the simulator in-process on a free loopback port with faults switched on,
//! collects and syncs users (twice: a backfill, then an incremental pass after an admin grant and
//! an accepted invitation), polls invitations, shows the role changes it established, compares
//! the database with the simulator's ground truth, evaluates the alert rules and delivers the
//! alerts (signed webhooks) to a receiver it starts on loopback, which keeps what it gets, and
//! writes every report into `reports/`. It prints nothing: each [`Step`] goes to `cli` as it
//! happens, and the comparison with the truth is returned ([`DemoOutcome`]).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use tokio::sync::mpsc;

use crate::collect::users::UserSummary;
use crate::collect::{self, AccountSummary, CollectOptions};
use crate::config::{Account, AccountKind, CollectionSettings, Credential, RateLimit};
use crate::pass::{AlertsOutcome, PassOptions, Stage};
use crate::secret::Secret;
use crate::simulate;
use crate::store::Store;

const DEMO_KEY: &str = "demo-simulator-key";

/// Settings that suit a local simulator: short waits, generous limits.
pub fn simulator_collection_settings() -> CollectionSettings {
    let mut c = CollectionSettings {
        request_timeout: Duration::from_secs(5),
        rate_limits: vec![RateLimit {
            requests: 2000,
            per_secs: 1,
        }],
        ..CollectionSettings::default()
    };
    c.retry.base_delay = Duration::from_millis(50);
    c.retry.max_delay = Duration::from_secs(5);
    c
}

/// What the demo is asked to do (`auditwarden demo`'s flags).
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the demo database goes.
    pub db: PathBuf,
    /// Audit events in the simulated account.
    pub events: usize,
    /// Days of history.
    pub days: u32,
    /// Fault injection (see `simulate --faults`).
    pub faults: String,
}

/// One thing the demo did, sent as it happens so that `cli` can show it (the demo prints
/// nothing itself). About twenty steps.
#[derive(Debug)]
pub enum Step {
    /// The simulator is serving both APIs at `base`.
    SimulatorStarted {
        base: url::Url,
        events: usize,
        days: u32,
        faults: String,
    },
    /// The backfill reaches further than the simulated history, as far as the reports look.
    WiderBackfill {
        backfill_days: u32,
        dormant_days: u32,
    },
    /// A collection pass begins: "backfill", then "incremental pass".
    Pass(&'static str),
    /// The audit-log pass of each account.
    Collected(Vec<AccountSummary>),
    /// The user sync of each account.
    UsersSynced(Vec<UserSummary>),
    /// Between the passes, the simulator made this user an administrator.
    Granted { user: String, role: &'static str },
    /// Between the passes, this invited user accepted.
    Accepted { user: String },
    /// The invitation poll of each account.
    InvitationsPolled(Vec<UserSummary>),
    /// The administrator grants established, as `auditwarden role-changes` shows them.
    RoleChanges { table: String },
    /// The alert rules are about to run, delivering to a receiver on loopback.
    AlertsStarted,
    /// The rules ran on each account and the alerts were delivered; `received` holds the
    /// summary of each alert the receiver got, in the order it got them.
    Alerts {
        outcome: AlertsOutcome,
        received: Vec<String>,
    },
    /// The report set was written.
    ReportsWritten {
        dir: PathBuf,
        /// (file name, rows)
        files: Vec<(String, u64)>,
    },
}

/// What the demo's database holds against the simulator's ground truth.
#[derive(Debug, Clone)]
pub struct DemoOutcome {
    pub db: PathBuf,
    /// Events stored for `demo-one`.
    pub stored: usize,
    pub quarantined: u64,
    /// Well-formed events the simulator served.
    pub truth_events: usize,
    pub truth_malformed: usize,
    /// In the simulator, not in the database.
    pub missing: usize,
    /// In the database, not in the simulator.
    pub extra: usize,
}

impl DemoOutcome {
    /// Every event stored exactly once.
    pub fn matches(&self) -> bool {
        self.missing == 0 && self.extra == 0
    }
}

/// Run the demo, sending each [`Step`] to `steps` as it happens (a closed receiver only means
/// nobody watches).
pub async fn run(
    opts: DemoOptions,
    steps: mpsc::UnboundedSender<Step>,
) -> anyhow::Result<DemoOutcome> {
    let DemoOptions {
        db,
        events,
        days,
        faults,
    } = opts;
    let say = |step: Step| {
        let _ = steps.send(step);
    };
    let spec = simulate::FaultSpec::parse(&faults).map_err(|e| anyhow::anyhow!("--faults: {e}"))?;
    let sim = Arc::new(simulate::Simulator::new(simulate::SimOptions {
        seed: 7,
        events,
        days,
        users: 40,
        faults: spec,
        api_key: DEMO_KEY.into(),
        expired_api_keys: Vec::new(),
        non_admin_api_keys: Vec::new(),
        extra_api_keys: Vec::new(),
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("starting the simulator on 127.0.0.1")?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(simulate::serve(listener, sim, async {
        let _ = stop_rx.await;
    }));
    let base = url::Url::parse(&format!("http://{addr}"))?;
    say(Step::SimulatorStarted {
        base: base.clone(),
        events,
        days,
        faults: faults.clone(),
    });
    // The reports look back as far as the dormancy threshold: collect at least that far, so
    // their coverage is complete (older days simply hold no events).
    let settings = crate::config::ReportSettings::defaults(std::path::Path::new("."));
    let backfill_days = days.max(settings.dormant_days);
    if backfill_days > days {
        say(Step::WiderBackfill {
            backfill_days,
            dormant_days: settings.dormant_days,
        });
    }

    let accounts = [
        Account {
            name: "demo-one".into(),
            kind: AccountKind::DigicertOne,
            base_url: base.clone(),
            credential: Credential::ApiKey(Secret::new(DEMO_KEY)),
            actions: Vec::new(),
            backfill_days,
            collection: simulator_collection_settings(),
            audit_log: true,
            report_base_url: None,
            node: None,
        },
        Account {
            name: "demo-certcentral".into(),
            kind: AccountKind::CertCentral,
            base_url: base.clone(),
            credential: Credential::ApiKey(Secret::new(DEMO_KEY)),
            actions: Vec::new(),
            backfill_days,
            collection: simulator_collection_settings(),
            audit_log: true,
            report_base_url: None,
            node: None,
        },
    ];
    let refs: Vec<&Account> = accounts.iter().collect();
    let mut store = Store::open(&db).with_context(|| format!("opening {}", db.display()))?;
    for pass in ["backfill", "incremental pass"] {
        say(Step::Pass(pass));
        let mut show = |stage: Stage<'_>| match stage {
            Stage::Collected(summaries) => say(Step::Collected(summaries.to_vec())),
            Stage::UsersSynced { users, .. } => say(Step::UsersSynced(users.to_vec())),
        };
        let opts = PassOptions {
            collect: CollectOptions {
                today: crate::clock::today(),
                progress: false,
                cancel: tokio_util::sync::CancellationToken::new(),
                panic_account: None,
                max_accounts: crate::config::DEFAULT_MAX_CONCURRENT_ACCOUNTS,
            },
            // Evaluated once, after both passes, with the demo's receiver (below).
            alerts: None,
            on_stage: Some(&mut show),
        };
        let outcome = crate::pass::run_pass(store, &refs, opts).await?;
        store = outcome.store;
        if outcome.collected.iter().any(|s| s.error.is_some()) {
            bail!("a pass failed (see above)");
        }
        if pass == "backfill" {
            // Late events landed in days already read during the backfill: the next pass finds
            // them by comparing totals, without re-reading history. Stop arrivals and faults now.
            http_post(&base, "/_sim/freeze", "").await?;
            // Between the passes, someone makes a user an administrator and an invitee accepts.
            let truth = http_get_json(&base, "/_sim/truth?events=0").await?;
            let one_users = truth["users"]["digicert_one"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let pick = |pred: &dyn Fn(&serde_json::Value) -> bool| {
                one_users
                    .iter()
                    .find(|u| pred(u))
                    .and_then(|u| u["id"].as_str().map(str::to_string))
            };
            let not_admin = |u: &serde_json::Value| {
                u["status"] == "ACTIVE"
                    && u["user_type"] == "standard"
                    && !u["roles"].to_string().contains("AM_ACCOUNT_ADMIN")
            };
            if let Some(id) = pick(&not_admin) {
                say(Step::Granted {
                    user: id.clone(),
                    role: "AM_ACCOUNT_ADMIN",
                });
                http_post(
                    &base,
                    &format!("/_sim/users/{id}/grant"),
                    r#"{"role": "AM_ACCOUNT_ADMIN"}"#,
                )
                .await?;
            }
            if let Some(id) = pick(&|u| u["status"] == "PENDING") {
                say(Step::Accepted { user: id.clone() });
                http_post(&base, &format!("/_sim/users/{id}/accept"), "").await?;
            }
        }
    }
    let polls = collect::users::poll_invites(&mut store, &refs, 14).await;
    say(Step::InvitationsPolled(polls));
    let q = crate::report_users::RoleChangesQuery {
        accounts: vec!["demo-one".into()],
        user: None,
        role: Some("AM_ACCOUNT_ADMIN".into()),
    };
    let mut table = Vec::new();
    crate::report_users::write_role_changes(
        &store,
        &q,
        crate::report_users::UsersFormat::Table,
        &mut table,
    )?;
    say(Step::RoleChanges {
        table: String::from_utf8_lossy(&table).into_owned(),
    });

    say(Step::AlertsStarted);
    let (received, receiver_url, stop_receiver) = start_receiver().await?;
    let alerts = crate::config::AlertSettings {
        sinks: vec![crate::config::SinkConfig {
            name: "demo-receiver".into(),
            kind: crate::config::SinkKind::Webhook {
                url: receiver_url,
                secret: Secret::new("demo-webhook-secret"),
            },
        }],
        ..crate::config::AlertSettings::default()
    };
    let outcome = crate::pass::alerts(&mut store, &refs, &alerts).await;
    let received = received.lock().map(|v| v.clone()).unwrap_or_default();
    let _ = stop_receiver.send(());
    say(Step::Alerts { outcome, received });

    let provenance = crate::report::run::Provenance {
        config_sha256: "none (demo: no configuration file)".into(),
        signing_key: None,
    };
    let run = crate::report::run::run_scheduled(
        &store,
        &settings,
        &refs,
        14,
        crate::clock::now(),
        &provenance,
    )?;
    say(Step::ReportsWritten {
        dir: run.dir.clone(),
        files: run
            .manifest
            .files
            .iter()
            .map(|f| (f.file.clone(), f.rows))
            .collect(),
    });

    let truth = http_get_json(&base, "/_sim/truth").await?;
    let truth_ids: BTreeSet<String> = truth["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let truth_malformed = truth["malformed"].as_array().map(|a| a.len()).unwrap_or(0);
    let stored: BTreeSet<String> = store.event_ids("demo-one")?.into_iter().collect();
    let status = store.account_status("demo-one")?;
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(DemoOutcome {
        db,
        stored: stored.len(),
        quarantined: status.quarantined,
        truth_events: truth_ids.len(),
        truth_malformed,
        missing: truth_ids.difference(&stored).count(),
        extra: stored.difference(&truth_ids).count(),
    })
}

async fn http_get_json(base: &url::Url, path: &str) -> anyhow::Result<serde_json::Value> {
    let url = base.join(path)?;
    let body = reqwest::get(url).await?.error_for_status()?.text().await?;
    Ok(serde_json::from_str(&body)?)
}

async fn http_post(base: &url::Url, path: &str, body: &str) -> anyhow::Result<()> {
    let url = base.join(path)?;
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// A webhook receiver on loopback that keeps the summary of each alert it gets.
async fn start_receiver() -> anyhow::Result<(
    Arc<std::sync::Mutex<Vec<String>>>,
    url::Url,
    tokio::sync::oneshot::Sender<()>,
)> {
    use axum::extract::State;
    type Received = Arc<std::sync::Mutex<Vec<String>>>;
    async fn receive(State(got): State<Received>, body: String) -> &'static str {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        // The summary already names the severity and the rule.
        let line = v["summary"].as_str().unwrap_or("?").to_string();
        if let Ok(mut g) = got.lock() {
            g.push(line);
        }
        "ok"
    }
    let got: Received = Arc::default();
    let app = axum::Router::new()
        .route("/alerts", axum::routing::post(receive))
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("starting the alert receiver on 127.0.0.1")?;
    let url = url::Url::parse(&format!("http://{}/alerts", listener.local_addr()?))?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Ok((got, url, tx))
}
