//! `auditwarden demo`: the whole job on the built-in simulator, for a new user with no DigiCert
//! account. Starts the simulator in-process on a free loopback port with faults switched on,
//! collects and syncs users (twice: a backfill, then an incremental pass after an admin grant and
//! an accepted invitation), polls invitations, shows the role changes it established, compares
//! the database with the simulator's ground truth, evaluates the alert rules and delivers the
//! alerts (signed webhooks) to a receiver it starts on loopback, which prints what it gets, and
//! writes every report into `reports/`, and prints where to look next.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::collect::{self, CollectOptions};
use crate::config::{Account, AccountKind, CollectionSettings, Credential, RateLimit};
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

pub async fn run(db: PathBuf, events: usize, days: u32, faults: &str) -> anyhow::Result<()> {
    let spec = simulate::FaultSpec::parse(faults).map_err(|e| anyhow::anyhow!("--faults: {e}"))?;
    let sim = Arc::new(simulate::Simulator::new(simulate::SimOptions {
        seed: 7,
        events,
        days,
        users: 40,
        faults: spec,
        api_key: DEMO_KEY.into(),
        expired_api_keys: Vec::new(),
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
    println!("simulator: DigiCert ONE and CertCentral on {base} ({events} events over {days} days, faults: {faults})");
    // The reports look back as far as the dormancy threshold: collect at least that far, so
    // their coverage is complete (older days simply hold no events).
    let settings = crate::config::ReportSettings::defaults(std::path::Path::new("."));
    let backfill_days = days.max(settings.dormant_days);
    if backfill_days > days {
        println!(
            "collecting {backfill_days} days: the reports look back {} days (dormancy)",
            settings.dormant_days
        );
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
        },
        Account {
            name: "demo-certcentral".into(),
            kind: AccountKind::CertCentral,
            base_url: base.clone(),
            credential: Credential::ApiKey(Secret::new(DEMO_KEY)),
            actions: Vec::new(),
            backfill_days,
            collection: simulator_collection_settings(),
        },
    ];
    let refs: Vec<&Account> = accounts.iter().collect();
    let mut store = Store::open(&db).with_context(|| format!("opening {}", db.display()))?;
    let opts = CollectOptions {
        today: crate::clock::today(),
        progress: false,
        cancel: tokio_util::sync::CancellationToken::new(),
        panic_account: None,
    };
    let mut out = std::io::stdout();
    for pass in ["backfill", "incremental pass"] {
        println!("\n== {pass}");
        let (s, summaries) = collect::collect(store, &refs, &opts).await?;
        store = s;
        crate::cli::print_summaries(&mut out, &summaries)?;
        if summaries.iter().any(|s| s.error.is_some()) {
            bail!("a pass failed (see above)");
        }
        let users = collect::users::sync_users(&mut store, &refs).await;
        crate::report_users::print_user_summaries(&mut out, &users)?;
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
                println!("\n(simulator: user {id} is granted AM_ACCOUNT_ADMIN)");
                http_post(
                    &base,
                    &format!("/_sim/users/{id}/grant"),
                    r#"{"role": "AM_ACCOUNT_ADMIN"}"#,
                )
                .await?;
            }
            if let Some(id) = pick(&|u| u["status"] == "PENDING") {
                println!("(simulator: invited user {id} accepts the invitation)");
                http_post(&base, &format!("/_sim/users/{id}/accept"), "").await?;
            }
        }
    }
    println!("\n== invitation poll");
    let polls = collect::users::poll_invites(&mut store, &refs, 14).await;
    crate::report_users::print_user_summaries(&mut out, &polls)?;
    println!("\n== role changes established (audit evidence, or the snapshot window)");
    let q = crate::report_users::RoleChangesQuery {
        accounts: vec!["demo-one".into()],
        user: None,
        role: Some("AM_ACCOUNT_ADMIN".into()),
    };
    crate::report_users::write_role_changes(
        &store,
        &q,
        crate::report_users::UsersFormat::Table,
        &mut out,
    )?;

    println!("\n== alerts (rules evaluated, delivered as signed webhooks to a local receiver)");
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
    for e in crate::alert::evaluate(&mut store, &refs, &alerts, crate::clock::now()) {
        match e.result {
            Ok(c) => println!(
                "{}: {} alert(s), {} of them history older than the backfill horizon (kept, not sent)",
                e.account, c.alerts, c.suppressed
            ),
            Err(err) => println!("{}: alerts not evaluated: {err}", e.account),
        }
    }
    let d = crate::alert::deliver(&mut store, &alerts).await;
    for (sink, c) in &d.per_sink {
        let (sent, failed, pending) = (c.sent, c.failed, c.pending);
        println!("delivered to {sink}: {sent} sent, {failed} failed, {pending} pending");
    }
    let got = received.lock().map(|v| v.clone()).unwrap_or_default();
    println!("the receiver got {} alert(s)", got.len());
    let _ = stop_receiver.send(());

    println!("\n== reports (from the database alone)");
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
    for f in &run.manifest.files {
        println!("  {}/{} ({} rows)", run.dir.display(), f.file, f.rows);
    }
    println!(
        "  {}/manifest.json (SHA-256 of each file)",
        run.dir.display()
    );

    let truth = http_get_json(&base, "/_sim/truth").await?;
    let truth_ids: BTreeSet<String> = truth["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let malformed = truth["malformed"].as_array().map(|a| a.len()).unwrap_or(0);
    let stored: BTreeSet<String> = store.event_ids("demo-one")?.into_iter().collect();
    let status = store.account_status("demo-one")?;
    println!("\n== result");
    println!(
        "database {}: {} events stored for demo-one, {} quarantined",
        db.display(),
        stored.len(),
        status.quarantined
    );
    println!(
        "simulator ground truth: {} well-formed events, {} malformed",
        truth_ids.len(),
        malformed
    );
    let missing = truth_ids.difference(&stored).count();
    let extra = stored.difference(&truth_ids).count();
    if missing == 0 && extra == 0 {
        println!("every event stored exactly once: nothing missing, nothing extra");
    } else {
        println!("MISMATCH: {missing} missing, {extra} not in the simulator");
    }
    println!("\nalerts: `auditwarden alerts` lists them (with a config whose [store] path is {}); docs/alerts.md has the payload", db.display());
    println!("daemon: `auditwarden run` schedules all of this ([schedule] in config/auditwarden.example.toml), with /healthz, /readyz and /metrics on [daemon] listen");
    println!("\nnext: query {} with sqlite3, or write a config from config/auditwarden.example.toml and run `auditwarden status`, `auditwarden users`, `auditwarden role-changes` or `auditwarden export events --format csv`", db.display());
    let _ = stop_tx.send(());
    let _ = server.await;
    if missing != 0 || extra != 0 {
        bail!("the demo's database does not match the simulator's ground truth");
    }
    Ok(())
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

/// A webhook receiver on loopback that prints each alert it gets and keeps its summary.
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
        println!(
            "  receiver got: {}",
            line.replace(|c: char| c.is_control(), " ")
        );
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
