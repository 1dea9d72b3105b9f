//! `review close ID`: freeze the decisions (a closure row, the last link of the campaign's chain)
//! and write the evidence package into `{output_dir}/review-<id>/`: one self-contained HTML page
//! (population, decisions with reviewer, time and justification, summary, remediation), the same
//! as CSV and JSON (`docs/review-schema.md`), and a `manifest.json` in the shape `verify-report`
//! checks (each file's SHA-256, the chain heads: the campaign's and every account's), signed like
//! a `reports run` when `[reports] signing_key_file` is set. Each file is written atomically
//! (`report::run::write_file_atomically`); the manifest last, its signature after it.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Serialize;
use serde_json::{json, Value};

use super::status::{status, Remediation, RemediationState, ReviewStatus};
use super::{at, campaign, ReviewError};
use crate::export::{neutralize, rfc3339};
use crate::report::run::{write_file_atomically, ManifestHead, SIGNATURE_FILE};
use crate::signing::SigningKey;
use crate::store::chain::{ChainHead, ChainKind};
use crate::store::{review_chain_account, Decision, ReviewItem, ReviewRefusal, Store};

#[derive(Debug)]
pub struct Closed {
    pub dir: PathBuf,
    pub files: Vec<String>,
    pub signed: bool,
    pub head: ChainHead,
    pub status: ReviewStatus,
}

#[derive(Serialize)]
struct ManifestFile {
    file: String,
    kind: &'static str,
    format: &'static str,
    bytes: u64,
    sha256: String,
    rows: u64,
}

#[derive(Serialize)]
struct Manifest {
    schema: &'static str,
    generated_at: String,
    generator: String,
    version: &'static str,
    campaign: Value,
    /// The campaign's chain (after its closure) and each reviewed account's chains, read after
    /// closing: `verify-report` checks each is still at its position in today's chains.
    chain_heads: Vec<ManifestHead>,
    signature: Option<&'static str>,
    files: Vec<ManifestFile>,
}

/// Close campaign `id` as of `now` and write its package under `output_dir`.
pub fn close(
    store: &mut Store,
    id: i64,
    output_dir: &Path,
    key: Option<&SigningKey>,
    now: DateTime<Utc>,
) -> Result<Closed, ReviewError> {
    let c = campaign(store, id)?;
    let dir = output_dir.join(format!("review-{id}"));
    if c.closed_ms.is_some() && dir.join("manifest.json").is_file() {
        return Err(ReviewError::Refused(format!(
            "review campaign {id} is already closed; its package is {}",
            dir.display()
        )));
    }
    if c.closed_ms.is_none() {
        let before = status(store, id, now)?;
        match store.close_review(
            id,
            now.timestamp_millis(),
            before.decided() as i64,
            before.total() as i64,
        )? {
            Ok(_) => {}
            Err(ReviewRefusal::Closed(_)) => {
                return Err(ReviewError::Refused(format!(
                    "review campaign {id} was closed by another run meanwhile"
                )))
            }
            Err(ReviewRefusal::NoSuchCampaign) => {
                return Err(ReviewError::Usage(format!("no review campaign {id}")))
            }
        }
    }
    // A close whose package was not written (a crash) writes it now, from the frozen state.
    let st = status(store, id, now)?;
    let head = store.review_head(id)?;
    std::fs::create_dir_all(&dir).map_err(|source| ReviewError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let base = format!("review-{id}");
    let rows = st.items.len() as u64;
    let mut files = Vec::new();
    let renders: [(&str, &'static str, Vec<u8>); 3] = [
        (
            "html",
            "text/html",
            html_page(&st).into_string().into_bytes(),
        ),
        ("csv", "text/csv", csv_bytes(&st)?),
        ("json", "application/json", {
            let mut v = serde_json::to_vec_pretty(&json_doc(&st))?;
            v.push(b'\n');
            v
        }),
    ];
    for (ext, _mime, bytes) in renders {
        let file = format!("{base}.{ext}");
        let ((), n, sha) = write_file_atomically(&dir.join(&file), |w| {
            w.write_all(&bytes)?;
            Ok(())
        })?;
        files.push(ManifestFile {
            file,
            kind: "access-review-campaign",
            format: ext_format(ext),
            bytes: n,
            sha256: sha,
            rows,
        });
    }
    let mut heads = vec![ManifestHead {
        account: review_chain_account(id),
        chain: ChainKind::Reviews.as_str().into(),
        n: head.n,
        hash: hex::encode(head.hash),
    }];
    let recorded = store.chain_heads(None)?;
    for a in &st.campaign.accounts {
        for kind in ChainKind::ALL {
            let h = recorded
                .iter()
                .find(|(k, acc, _)| *k == kind && acc == a)
                .map(|(_, _, h)| *h)
                .unwrap_or_else(|| ChainHead::genesis(kind, a));
            heads.push(ManifestHead {
                account: a.clone(),
                chain: kind.as_str().into(),
                n: h.n,
                hash: hex::encode(h.hash),
            });
        }
    }
    let manifest = Manifest {
        schema: "auditwarden-review-manifest/1",
        generated_at: rfc3339(now),
        generator: format!("auditwarden {}", env!("CARGO_PKG_VERSION")),
        version: env!("CARGO_PKG_VERSION"),
        campaign: campaign_json(&st),
        chain_heads: heads,
        signature: key.map(|_| "ed25519"),
        files,
    };
    let mut text = serde_json::to_vec_pretty(&manifest)?;
    text.push(b'\n');
    write_file_atomically(&dir.join("manifest.json"), |w| {
        w.write_all(&text)?;
        Ok(())
    })?;
    if let Some(key) = key {
        let sig = crate::signing::sign_manifest(&text, key);
        write_file_atomically(&dir.join(SIGNATURE_FILE), |w| {
            w.write_all(sig.as_bytes())?;
            w.write_all(b"\n")?;
            Ok(())
        })?;
    }
    Ok(Closed {
        dir,
        files: manifest.files.iter().map(|f| f.file.clone()).collect(),
        signed: key.is_some(),
        head,
        status: st,
    })
}

fn ext_format(ext: &str) -> &'static str {
    match ext {
        "html" => "html",
        "csv" => "csv",
        _ => "json",
    }
}

fn when(ms: Option<i64>) -> Option<String> {
    ms.map(|t| rfc3339(at(t)))
}

fn remediation_of(st: &ReviewStatus, no: i64) -> Option<&Remediation> {
    st.remediation.iter().find(|r| r.item.item_no == no)
}

/// Earlier decisions of an item (its history; the last row is the current decision).
fn earlier(st: &ReviewStatus, no: i64) -> Vec<&Decision> {
    let mut all: Vec<&Decision> = st.history.iter().filter(|d| d.item_no == no).collect();
    all.pop();
    all
}

fn campaign_json(st: &ReviewStatus) -> Value {
    let c = &st.campaign;
    let heads: Vec<Value> = c
        .chain_heads
        .lines()
        .filter_map(|l| {
            let mut p = l.split(' ');
            let (chain, account, n, hash) = (p.next()?, p.next()?, p.next()?, p.next()?);
            Some(json!({"chain": chain, "account": account, "n": n.parse::<i64>().ok()?, "hash": hash}))
        })
        .collect();
    json!({
        "id": c.id,
        "name": c.name,
        "scope": c.scope,
        "accounts": c.accounts,
        "reviewers": c.reviewers,
        "due": c.due_day,
        "started_at": rfc3339(at(c.started_ms)),
        "closed_at": when(c.closed_ms),
        "items": c.items,
        "population_sha256": c.population_sha256,
        "chain_heads_at_start": heads,
    })
}

fn decision_json(d: &Decision) -> Value {
    json!({
        "decision": d.decision,
        "justification": d.justification,
        "reviewer": d.reviewer,
        "decided_at": rfc3339(at(d.decided_ms)),
        "source_file": d.source_file,
        "source_sha256": d.source_sha256,
    })
}

fn json_doc(st: &ReviewStatus) -> Value {
    let items: Vec<Value> = st
        .items
        .iter()
        .map(|it| {
            let rem = remediation_of(st, it.item_no).map(|r| {
                json!({
                    "state": r.state.as_str(),
                    "removed": r.removal.as_ref().map(|m| json!({
                        "observed_at": when(m.observed_ms),
                        "observed_after": when(m.after_ms),
                        "user_deleted": m.deleted,
                        "event": m.event.as_ref().map(|e| json!({
                            "event_id": e.event_id,
                            "at": rfc3339(at(e.event_ms)),
                            "actor_id": e.actor_id,
                            "actor_name": e.actor_name,
                            "ip_address": e.ip_address,
                        })),
                        "description": m.describe(),
                    })),
                })
            });
            json!({
                "item": it.item_no,
                "account": it.account,
                "user_id": it.user_id,
                "user": it.user_name,
                "email": it.email,
                "user_type": it.user_type,
                "status": it.status,
                "role": it.role,
                "privileged": it.privileged,
                "last_activity": when(it.last_activity_ms),
                "activity_source": it.activity_source,
                "dormant": it.dormant,
                "granted": it.granted,
                "granted_at": when(it.granted_ms),
                "granted_by": {
                    "id": it.granted_by_id,
                    "name": it.granted_by_name,
                    "email": it.granted_by_email,
                },
                "grant_event_id": it.grant_event_id,
                "grant_ip": it.grant_ip,
                "decision": st.current.get(&it.item_no).map(decision_json),
                "earlier_decisions": earlier(st, it.item_no).into_iter().map(decision_json).collect::<Vec<_>>(),
                "remediation": rem,
            })
        })
        .collect();
    json!({
        "schema": "auditwarden-review/1",
        "generator": format!("auditwarden {}", env!("CARGO_PKG_VERSION")),
        "generated_at": rfc3339(at(st.as_of_ms)),
        "campaign": campaign_json(st),
        "summary": {
            "items": st.total(),
            "decided": st.decided(),
            "undecided": st.total() - st.decided(),
            "by_decision": st.by_decision,
            "by_reviewer": st.by_reviewer,
            "revocations": {
                "done": st.count(RemediationState::Done),
                "open": st.count(RemediationState::Open),
                "overdue": st.count(RemediationState::Overdue),
            },
        },
        "items": items,
    })
}

const CSV_COLUMNS: [&str; 20] = [
    "item",
    "account",
    "user_id",
    "user",
    "email",
    "user_type",
    "status",
    "role",
    "privileged",
    "last_activity",
    "dormant",
    "granted",
    "decision",
    "justification",
    "reviewer",
    "decided_at",
    "earlier_decisions",
    "remediation",
    "remediation_detail",
    "source_file",
];

fn csv_bytes(st: &ReviewStatus) -> Result<Vec<u8>, ReviewError> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    w.write_record(CSV_COLUMNS)?;
    for it in &st.items {
        let d = st.current.get(&it.item_no);
        let r = remediation_of(st, it.item_no);
        let hist: Vec<String> = earlier(st, it.item_no)
            .into_iter()
            .map(|e| {
                format!(
                    "{} by {} at {}",
                    e.decision,
                    e.reviewer,
                    rfc3339(at(e.decided_ms))
                )
            })
            .collect();
        let row: [String; 20] = [
            it.item_no.to_string(),
            it.account.clone(),
            it.user_id.clone(),
            it.user_name.clone().unwrap_or_default(),
            it.email.clone().unwrap_or_default(),
            it.user_type.clone().unwrap_or_default(),
            it.status.clone(),
            it.role.clone(),
            it.privileged.to_string(),
            when(it.last_activity_ms).unwrap_or_default(),
            it.dormant.to_string(),
            it.granted.clone(),
            d.map(|d| d.decision.clone()).unwrap_or_default(),
            d.map(|d| d.justification.clone()).unwrap_or_default(),
            d.map(|d| d.reviewer.clone()).unwrap_or_default(),
            d.map(|d| rfc3339(at(d.decided_ms))).unwrap_or_default(),
            hist.join("; "),
            r.map(|r| r.state.as_str().to_string()).unwrap_or_default(),
            r.and_then(|r| r.removal.as_ref().map(|m| m.describe()))
                .unwrap_or_default(),
            d.map(|d| d.source_file.clone()).unwrap_or_default(),
        ];
        w.write_record(row.iter().map(|s| neutralize(s).into_owned()))?;
    }
    w.into_inner()
        .map_err(|e| ReviewError::Sheet(format!("writing the CSV: {e}")))
}

fn csp() -> &'static str {
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
}

const EXTRA_CSS: &str = r#"
main{max-width:1900px}
h2.sec{font-size:17px;margin:22px 0 8px}
td.keep{color:var(--ok);font-weight:600}td.revoke{color:var(--warn);font-weight:600}td.unsure{color:#8a5a00;font-weight:600}
td.done{color:var(--ok);font-weight:600}td.open{color:#8a5a00;font-weight:600}td.overdue{color:var(--warn);font-weight:700}
code{font-size:12px;overflow-wrap:anywhere}
"#;

fn html_page(st: &ReviewStatus) -> Markup {
    let c = &st.campaign;
    let title = format!("Access review {}: {}", c.id, c.name);
    let undecided = st.total() - st.decided();
    let changed: Vec<&Decision> = {
        let mut v = Vec::new();
        for it in &st.items {
            v.extend(earlier(st, it.item_no));
        }
        v
    };
    let card = |v: u64, l: &str, warn: bool| {
        html! { div class=(if warn { "card warn" } else { "card" }) { div.v { (v) } div.l { (l) } } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="Content-Security-Policy" content=(csp());
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — auditwarden" }
                style { (PreEscaped(crate::report::HTML_CSS)) (PreEscaped(EXTRA_CSS)) }
            }
            body {
                main {
                    header {
                        h1 { (title) }
                        p.sub { "auditwarden access-review evidence package · scope " (c.scope) }
                        dl.facts {
                            dt { "Campaign" } dd { (c.id) " · " (c.name) }
                            dt { "Accounts" } dd { (c.accounts.join(", ")) }
                            dt { "Population frozen" } dd { (rfc3339(at(c.started_ms))) " · " (c.items) " item(s) (one per account, user and role)" }
                            dt { "Population SHA-256" } dd { code { (c.population_sha256) } }
                            dt { "Reviewers" } dd { @if c.reviewers.is_empty() { "anyone but the holder or granter of a role" } @else { (c.reviewers.join(", ")) } }
                            dt { "Due" } dd { (c.due_day.as_deref().unwrap_or("no due date")) }
                            dt { "Closed" } dd { (when(c.closed_ms).unwrap_or_else(|| "open".into())) }
                            dt { "Chain heads at start" } dd { @for l in c.chain_heads.lines() { code { (l) } br; } }
                        }
                    }
                    section class=(if undecided == 0 && st.count(RemediationState::Done) == st.remediation.len() as u64 { "coverage ok" } else { "coverage bad" }) {
                        strong {
                            (st.decided()) " of " (st.total()) " item(s) decided; "
                            (st.count(RemediationState::Done)) " of " (st.remediation.len()) " revocation(s) carried out."
                        }
                        "Every revocation below is proved by a user snapshot taken after the campaign started (and the audit event that removed the role, when the audit log has it). This page, its CSV and JSON are listed with their SHA-256 in the signed manifest.json beside it; check it with auditwarden verify-report."
                    }
                    section.cards {
                        (card(st.total(), "Items", false))
                        (card(st.decided(), "Decided", false))
                        (card(undecided, "Undecided", undecided > 0))
                        (card(*st.by_decision.get("keep").unwrap_or(&0), "Keep", false))
                        (card(*st.by_decision.get("revoke").unwrap_or(&0), "Revoke", false))
                        (card(*st.by_decision.get("unsure").unwrap_or(&0), "Unsure", *st.by_decision.get("unsure").unwrap_or(&0) > 0))
                        (card(st.count(RemediationState::Done), "Revocations done", false))
                        (card(st.count(RemediationState::Open) + st.count(RemediationState::Overdue), "Revocations not carried out", st.count(RemediationState::Open) + st.count(RemediationState::Overdue) > 0))
                    }
                    section.notes {
                        h2 { "Decisions by reviewer" }
                        ul { @for (r, n) in &st.by_reviewer { li { (r) ": " (n) } } @if st.by_reviewer.is_empty() { li { "none" } } }
                    }
                    h2.sec { "Population and decisions" }
                    div.tablewrap { table.rows id="decisions" {
                        thead { tr {
                            @for h in ["Item", "Account", "User", "Role", "Decision", "Justification", "Reviewer", "Decided", "Remediation", "Status", "Last activity", "Granted"] { th scope="col" { (h) } }
                        } }
                        tbody {
                            @for it in &st.items {
                                (item_row(st, it))
                            }
                        }
                    } }
                    h2.sec { "Remediation" }
                    @if st.remediation.is_empty() {
                        p.empty { "No item was decided \"revoke\"." }
                    } @else {
                        div.tablewrap { table.rows id="remediation" {
                            thead { tr { @for h in ["Item", "Account", "User", "Role", "State", "Evidence"] { th scope="col" { (h) } } } }
                            tbody {
                                @for r in &st.remediation {
                                    tr {
                                        td.n { (r.item.item_no) }
                                        td { (r.item.account) }
                                        td { (r.item.user_name.as_deref().unwrap_or(&r.item.user_id)) }
                                        td { (r.item.role) }
                                        td class=(r.state.as_str()) { (r.state.as_str()) }
                                        td { (r.removal.as_ref().map(|m| m.describe()).unwrap_or_else(|| "no user snapshot since the campaign started shows the role gone".into())) }
                                    }
                                }
                            }
                        } }
                    }
                    @if !changed.is_empty() {
                        h2.sec { "Earlier decisions (changed later)" }
                        div.tablewrap { table.rows id="history" {
                            thead { tr { @for h in ["Item", "Decision", "Justification", "Reviewer", "Decided", "File"] { th scope="col" { (h) } } } }
                            tbody { @for d in &changed { tr {
                                td.n { (d.item_no) } td { (d.decision) } td { (d.justification) } td { (d.reviewer) }
                                td.t { (rfc3339(at(d.decided_ms))) } td { (d.source_file) }
                            } } }
                        } }
                    }
                    footer { (st.total()) " item(s) · auditwarden " (env!("CARGO_PKG_VERSION")) " · schema auditwarden-review/1 · times in UTC" }
                }
            }
        }
    }
}

fn item_row(st: &ReviewStatus, it: &ReviewItem) -> Markup {
    let d = st.current.get(&it.item_no);
    let r = remediation_of(st, it.item_no);
    html! {
        tr class=(if it.privileged { "priv decision" } else { "decision" }) data-item=(it.item_no) {
            td.n { (it.item_no) }
            td { (it.account) }
            td {
                (it.user_name.as_deref().unwrap_or(""))
                @if let Some(e) = &it.email { br; (e) }
                br; span.null { (it.user_id) }
            }
            td { span.chip { (it.role) } }
            @match d {
                Some(d) => {
                    td class=(d.decision) { (d.decision) }
                    td { (d.justification) }
                    td { (d.reviewer) }
                    td.t { (rfc3339(at(d.decided_ms))) }
                }
                None => { td.null { "undecided" } td {} td {} td {} }
            }
            td class=(r.map_or("", |r| r.state.as_str())) { (r.map_or("", |r| r.state.as_str())) }
            td { (it.status) br; span.null { (it.user_type.as_deref().unwrap_or("")) } }
            td {
                (when(it.last_activity_ms).unwrap_or_else(|| "never".into()))
                @if it.dormant { " " span.yes { "dormant" } }
                br; span.null { (it.activity_source.as_deref().unwrap_or("no activity recorded")) }
            }
            td { (it.granted) }
        }
    }
}
