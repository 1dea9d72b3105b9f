//! The health and metrics listener's handlers: `/healthz` (alive), `/readyz` (every account's
//! latest collection succeeded recently), `/metrics` (Prometheus text; database figures read on
//! a blocking thread, never waited on for long).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};

use crate::store::Store;

use super::metrics::{read_db_figures, render_metrics, AccountHealth, DbFigures};
use super::Shared;

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 when every configured account's last collection succeeded and is recent enough
/// (`[daemon] ready_max_age_secs`), else 503 with one line per account that is not.
pub(super) async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let cfg = shared.config.borrow().clone();
    let max_age = chrono::Duration::from_std(cfg.daemon.ready_max_age).unwrap_or_default();
    let now = Utc::now();
    let mut problems = Vec::new();
    shared.with_metrics(|m| {
        for a in &cfg.accounts {
            match m.accounts.get(&a.name) {
                Some(AccountHealth {
                    last_error: Some(e),
                    ..
                }) => problems.push(format!("{}: last pass failed: {e}", a.name)),
                Some(AccountHealth {
                    last_success: Some(t),
                    ..
                }) if now - *t <= max_age => {}
                Some(AccountHealth {
                    last_success: Some(t),
                    ..
                }) => problems.push(format!(
                    "{}: last successful pass {} is too old",
                    a.name,
                    t.to_rfc3339()
                )),
                _ => problems.push(format!("{}: no successful pass yet", a.name)),
            }
        }
    });
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        let body: String = problems
            .iter()
            .map(|p| format!("{}\n", one_line(p)))
            .collect();
        (StatusCode::SERVICE_UNAVAILABLE, body)
    }
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// How long a scrape waits for fresh database figures before it serves the latest ones.
const SCRAPE_DB_WAIT: Duration = Duration::from_millis(500);
/// How long the scrape's read waits for a lock (a WAL reader rarely has to).
const SCRAPE_DB_BUSY: Duration = Duration::from_millis(250);

pub(super) async fn metrics_handler(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let (db, read_at) = match scrape_db_figures(&shared).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(event = "metrics_failed", error = %e);
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("# the database could not be read: {}\n", one_line(&e)),
            );
        }
    };
    let age = (Utc::now() - read_at).to_std().unwrap_or_default();
    let requests = crate::api::counters::global().snapshot();
    let mut text = shared.with_metrics(|m| render_metrics(m, &db, age, &requests));
    // Client certificate expiry (mTLS accounts): read from the files, on a blocking thread.
    let cfg = shared.config.borrow().clone();
    text.push_str(&super::leases::lease_metrics(&cfg));
    let accounts = cfg.accounts.clone();
    let certs = tokio::task::spawn_blocking(move || crate::api::tls::expiry_metrics(&accounts));
    text.push_str(&certs.await.unwrap_or_default());
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// The database figures for one scrape: read now when that finishes within
/// [`SCRAPE_DB_WAIT`], else the latest figures read (a read still under way stores its result
/// for the next scrape). An error only when the read failed and nothing was ever read.
async fn scrape_db_figures(
    shared: &Arc<Shared>,
) -> Result<(Arc<DbFigures>, DateTime<Utc>), String> {
    if shared.db_reading.swap(true, Ordering::AcqRel) {
        return Ok(shared.latest_db_figures());
    }
    let cfg = shared.config.borrow().clone();
    let names: Vec<String> = cfg.accounts.iter().map(|a| a.name.clone()).collect();
    let s = shared.clone();
    let read = tokio::task::spawn_blocking(move || {
        /// Clears `db_reading` however the read ends (a panic included).
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _done = Done(&s.db_reading);
        let figures = Arc::new(db_figures(&cfg.store.target, &names)?);
        s.set_db_figures(figures.clone());
        Ok::<_, crate::store::StoreError>(figures)
    });
    match tokio::time::timeout(SCRAPE_DB_WAIT, read).await {
        Ok(Ok(Ok(f))) => Ok((f, Utc::now())),
        // A writer held the database past the scrape's short busy timeout: expected under a
        // backfill, and what the figures' age metric shows; not worth a warning per scrape.
        Ok(Ok(Err(e @ crate::store::StoreError::Busy { .. }))) => {
            tracing::debug!(event = "metrics_db_busy", error = %e, "serving the latest database figures");
            Ok(shared.latest_db_figures())
        }
        Ok(Ok(Err(e))) => {
            tracing::warn!(event = "metrics_db_read_failed", error = %e, "serving the latest database figures");
            Ok(shared.latest_db_figures())
        }
        Ok(Err(e)) => Err(format!("the metrics task failed: {e}")),
        // Still reading: it keeps its result for the next scrape.
        Err(_) => Ok(shared.latest_db_figures()),
    }
}

fn db_figures(
    target: &crate::store::StoreTarget,
    accounts: &[String],
) -> Result<DbFigures, crate::store::StoreError> {
    let store = Store::open_target_read_only_with_busy_timeout(target, SCRAPE_DB_BUSY)?;
    read_db_figures(&store, accounts)
}
