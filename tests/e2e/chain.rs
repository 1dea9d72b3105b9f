//! Tamper evidence: `verify` passes on what auditwarden wrote and names every row edited, deleted
//! or inserted behind its back; `keygen` writes a key only its owner can read.

use std::path::{Path, PathBuf};

use crate::helpers::*;

/// A copy of the collected database to tamper with, changed by `sql`.
fn tampered(app: &App, name: &str, sql: &str) -> PathBuf {
    let copy = app.dir.path().join(format!("{name}.db"));
    let c = rusqlite::Connection::open(&app.db).expect("open");
    c.execute("VACUUM INTO ?1", [copy.display().to_string()])
        .expect("copy");
    let t = rusqlite::Connection::open(&copy).expect("open copy");
    t.execute_batch(sql).expect("tamper");
    copy
}

fn one_value(db: &Path, sql: &str) -> String {
    let c = rusqlite::Connection::open(db).expect("open");
    c.query_row(sql, [], |r| r.get::<_, String>(0))
        .expect("query")
}

/// An untouched collected history verifies; each kind of tampering fails verify naming the row.
#[test]
fn verify_names_rows_edited_deleted_or_inserted_behind_its_back() {
    let sim = Sim::start(&["--events", "2000", "--days", "10", "--seed", "7"]);
    let app = App::new(&sim, "");
    app.collect_ok();
    app.collect_ok(); // a second pass (duplicates only) keeps the chains intact
    let (ok, out) = app.verify(None);
    assert!(ok, "{out}");
    assert!(
        out.contains("one: events chain: ") && out.contains("verify: ok"),
        "{out}"
    );
    assert!(out.contains("one: user_history chain: "), "{out}");

    let id = one_value(
        &app.db,
        "SELECT event_id FROM events ORDER BY seq LIMIT 1 OFFSET 100",
    );
    let seq = one_value(
        &app.db,
        "SELECT CAST(seq AS TEXT) FROM events ORDER BY seq LIMIT 1 OFFSET 100",
    );
    let next_seq = one_value(
        &app.db,
        "SELECT CAST(seq AS TEXT) FROM events ORDER BY seq LIMIT 1 OFFSET 101",
    );

    // Edited raw text: a broken link at that row, with both hashes.
    let db = tampered(
        &app,
        "edit",
        &format!("UPDATE events SET raw = replace(raw, '\"id\"', '\"id\" ') WHERE seq = {seq}"),
    );
    let (ok, out) = app.verify(Some(&db));
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("broken at row seq {seq} (event \"{id}\"")),
        "{out}"
    );
    assert!(
        out.contains("expected hash") && out.contains("found"),
        "{out}"
    );

    // Edited column that the chain does not hash directly: named with both values.
    let db = tampered(
        &app,
        "column",
        &format!("UPDATE events SET actor_name = 'Mallory' WHERE seq = {seq}"),
    );
    let (ok, out) = app.verify(Some(&db));
    assert!(!ok, "{out}");
    assert!(
        out.contains("column actor_name was edited") && out.contains(&id),
        "{out}"
    );

    // Deleted row: the gap, between its neighbours.
    let db = tampered(
        &app,
        "delete",
        &format!("DELETE FROM events WHERE seq = {seq}"),
    );
    let (ok, out) = app.verify(Some(&db));
    assert!(!ok, "{out}");
    assert!(
        out.contains("link #101 is missing") && out.contains(&format!("before row seq {next_seq}")),
        "{out}"
    );

    // Deleted tail: the chain ends short of the recorded head.
    let db = tampered(
        &app,
        "tail",
        "DELETE FROM events WHERE seq = (SELECT MAX(seq) FROM events)",
    );
    let (ok, out) = app.verify(Some(&db));
    assert!(!ok, "{out}");
    assert!(out.contains("the last 1 rows were deleted"), "{out}");

    // Inserted row: named by its seq and event id.
    let db = tampered(
        &app,
        "insert",
        &format!("INSERT INTO events (account, event_id, ts_ms, day, action, raw, collected_ms)
                  SELECT account, 'planted', ts_ms, day, action, raw, collected_ms FROM events WHERE seq = {seq}"),
    );
    let (ok, out) = app.verify(Some(&db));
    assert!(!ok, "{out}");
    assert!(
        out.contains("(event \"planted\") was not written by auditwarden"),
        "{out}"
    );

    // Edited user history: its own chain names the row and the user.
    let user = one_value(
        &app.db,
        "SELECT user_id FROM user_history ORDER BY seq LIMIT 1",
    );
    let db = tampered(&app, "history", "UPDATE user_history SET after = 'disabled' WHERE seq = (SELECT MIN(seq) FROM user_history)");
    let (ok, out) = app.verify(Some(&db));
    assert!(!ok, "{out}");
    assert!(
        out.contains("user_history chain broken at row seq") && out.contains(&user),
        "{out}"
    );

    // The original is still intact.
    assert!(app.verify(None).0);
}

/// keygen writes a 0600 PKCS#8 key, prints the public key, and never overwrites a key.
#[test]
fn keygen_writes_an_owner_only_key_and_prints_the_public_key() {
    let sim = Sim::start(&["--events", "10"]);
    let app = App::new(&sim, "");
    let key = app.dir.path().join("signing.pem");
    let out = app.run(&["keygen", "--out", key.to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("-----BEGIN PUBLIC KEY-----"), "{stdout}");
    let text = std::fs::read_to_string(&key).expect("key file");
    assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = app.run(&["keygen", "--out", key.to_str().expect("utf-8 path")]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&key).expect("key file"), text);
}
