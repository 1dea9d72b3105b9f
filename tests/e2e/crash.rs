//! Crash safety: kill -9 at random moments during a backfill, then let it finish: the stored set
//! equals the ground truth, nothing twice.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::helpers::*;

/// Twenty-plus kill -9s during a backfill lose nothing and duplicate nothing.
#[test]
fn kill_dash_nine_during_backfill_loses_nothing() {
    let sim = Sim::start(&[
        "--events",
        "20000",
        "--days",
        "30",
        "--seed",
        "4",
        "--faults",
        "rate-limit=0.02,server-error=0.02",
    ]);
    let app = App::new(&sim, "");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    while kills < 20 && Instant::now() < deadline {
        let mut child = app
            .command(&["collect"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.gen_range(30..400)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        if app.db.exists() {
            // The database must open cleanly at every point and hold no duplicate ids.
            let events = app.exported_events();
            let distinct: std::collections::BTreeSet<(String, String)> = events
                .iter()
                .map(|e| (e["account"].to_string(), e["id"].to_string()))
                .collect();
            assert_eq!(events.len(), distinct.len(), "an event was stored twice");
        }
    }
    assert!(
        kills >= 20,
        "only {kills} kills landed mid-run; the backfill finished too fast"
    );
    app.collect_ok();
    assert_matches_truth(&app, &sim, "one");
    // The hash chain survived every kill: each committed batch moved rows and head together.
    let (ok, out) = app.verify(None);
    assert!(ok, "{out}");
}
