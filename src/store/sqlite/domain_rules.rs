//! The rows' side of `crate::domain`: migration 8's backfill of the rules' results stored with
//! the rows (a user's `privileged`, its SHA-256 fingerprint), and the checks that map stored
//! names through the domain's closed enums, so a value outside a set is reported as a corrupt row
//! naming its table and row instead of being defaulted.

use rusqlite::params;

use crate::domain;

/// Domain enums are written by their stored names. (They are read back with [`parse_stored`],
/// which names the row when a value is not one of them.)
macro_rules! to_sql_by_name {
    ($($t:ty),+) => {
        $(impl rusqlite::ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::from(self.as_str()))
            }
        })+
    };
}

to_sql_by_name!(
    domain::UserStatus,
    domain::RoleChangeKind,
    domain::RoleChangeSource,
    domain::HistoryField,
    domain::UserRunKind,
    domain::DeliveryStatus
);

/// Users rewritten per statement batch by the backfill (keyset paging: memory stays flat).
const BACKFILL_CHUNK: i64 = 1_000;

/// A stored value that is not what auditwarden writes there: the table, the row and what is wrong.
/// Raised inside row mapping (which speaks rusqlite's error), it travels as the source of a
/// conversion error, and [`super::err`] turns it into [`crate::store::StoreError::Corrupt`].
#[derive(Debug)]
pub(crate) struct CorruptRow {
    pub table: String,
    pub row: String,
    pub what: String,
}

impl std::fmt::Display for CorruptRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "corrupt row: {} {}: {}", self.table, self.row, self.what)
    }
}

impl std::error::Error for CorruptRow {}

/// The error for column `col` of `table` at `row` holding `value`, which is not one of the
/// names auditwarden writes there.
pub(super) fn corrupt(
    col: usize,
    table: &str,
    row: &str,
    column: &str,
    value: &str,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        col,
        rusqlite::types::Type::Text,
        Box::new(CorruptRow {
            table: table.to_string(),
            row: row.to_string(),
            what: format!(
                "{column} {:?} is not a value auditwarden writes",
                value.chars().take(80).collect::<String>()
            ),
        }),
    )
}

/// Map a stored name through a domain enum's `parse`, or report the row as corrupt.
pub(super) fn parse_stored<T>(
    parse: fn(&str) -> Option<T>,
    value: &str,
    at: (usize, &str, &str, &str),
) -> rusqlite::Result<T> {
    let (col, table, row, column) = at;
    parse(value).ok_or_else(|| corrupt(col, table, row, column, value))
}

/// Read a `roles` column (a JSON array of strings the store wrote), or report the row as corrupt.
pub(super) fn parse_roles(roles: &str, at: (usize, &str, &str)) -> rusqlite::Result<Vec<String>> {
    let (col, table, row) = at;
    let parsed: serde_json::Result<Vec<String>> = serde_json::from_str(roles);
    parsed.map_err(|_| corrupt(col, table, row, "roles", roles))
}

/// Migration 8, for rows stored before it: each user's `privileged` (the any-kind rule: the
/// database does not record account kinds, and the two vocabularies do not overlap; the next
/// write of the user stores the per-kind result) and its fingerprint recomputed as SHA-256 over
/// the same fields, so the first sync after an upgrade rewrites no unchanged user. A user whose
/// roles cannot be read keeps its old fingerprint (so the next sync rewrites it from the API)
/// and is not marked privileged; reading it reports the corrupt row.
pub(super) fn backfill(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let mut after: (String, String) = (String::new(), String::new());
    loop {
        let chunk: Vec<(String, String, String, String, String)> = {
            let mut st = tx.prepare_cached(
                "SELECT account, user_id, raw, status_raw, roles FROM users
                 WHERE (account, user_id) > (?1, ?2) ORDER BY account, user_id LIMIT ?3",
            )?;
            let rows = st.query_map(params![after.0, after.1, BACKFILL_CHUNK], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let Some(last) = chunk.last() else {
            return Ok(());
        };
        after = (last.0.clone(), last.1.clone());
        let mut up = tx.prepare_cached(
            "UPDATE users SET privileged = ?3, fingerprint = ?4 WHERE account = ?1 AND user_id = ?2",
        )?;
        let mut up_priv = tx.prepare_cached(
            "UPDATE users SET privileged = 0 WHERE account = ?1 AND user_id = ?2",
        )?;
        for (account, user_id, raw, status_raw, roles) in &chunk {
            let parsed: serde_json::Result<Vec<String>> = serde_json::from_str(roles);
            match parsed {
                Ok(roles) => {
                    let privileged = roles.iter().any(|r| domain::is_privileged_role_any_kind(r));
                    let fp = domain::user_fingerprint(raw, status_raw, &roles);
                    up.execute(params![account, user_id, privileged, fp])?;
                }
                Err(_) => {
                    up_priv.execute(params![account, user_id])?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::{params, Connection};

    use super::super::migrations::{DOMAIN_RULES, MIGRATIONS};
    use crate::domain;
    use crate::store::Store;

    /// A database one migration short of `DOMAIN_RULES`, with the given users and alerts.
    fn old_db(path: &std::path::Path) -> Connection {
        let c = Connection::open(path).unwrap();
        let at = MIGRATIONS.iter().position(|m| *m == DOMAIN_RULES).unwrap();
        for sql in &MIGRATIONS[..at] {
            c.execute_batch(sql).unwrap();
        }
        c.pragma_update(None, "user_version", at as i64).unwrap();
        c
    }

    fn add_user(c: &Connection, account: &str, id: &str, roles: &str) {
        c.execute(
            "INSERT INTO users (account, user_id, status, status_raw, roles, raw, fingerprint,
                first_seen_ms, updated_ms) VALUES (?1, ?2, 'active', 'ACTIVE', ?3, ?4, 42, 0, 0)",
            params![account, id, roles, format!("{{\"id\":\"{id}\"}}")],
        )
        .unwrap();
    }

    /// Migration 8 recomputes every fingerprint as SHA-256 over the same fields (so an upgrade
    /// rewrites no unchanged user), stores `privileged` by the domain rule, leaves a user with
    /// unreadable roles as it was, and links each old alert to the role change its key names.
    #[test]
    fn the_migration_stores_the_rules_results_for_existing_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let c = old_db(&path);
            add_user(&c, "one", "admin", r#"["AM_ACCOUNT_ADMIN"]"#);
            add_user(&c, "one", "tlm", r#"["AM_VIEW_ONLY","TLM_ADMIN"]"#);
            add_user(&c, "one", "viewer", r#"["AM_VIEW_ONLY"]"#);
            add_user(&c, "cc", "7", r#"["Manager"]"#);
            add_user(&c, "cc", "8", r#"["Finance Manager"]"#);
            add_user(&c, "cc", "9", "not json");
            c.execute_batch(
                "INSERT INTO role_changes (seq, account, user_id, role, change, observed_ms,
                    after_ms, event_id, source)
                 VALUES (1, 'one', 'admin', 'AM_ACCOUNT_ADMIN', 'granted', 20, 10, 'ev-1', 'snapshot+audit'),
                        (2, 'cc', '7', 'Manager', 'granted', 20, 10, NULL, 'snapshot');
                 INSERT INTO alerts (alert_key, uid, account, rule, severity, summary, payload,
                    suppressed, created_ms)
                 VALUES ('grant|one|event:ev-1:admin:AM_ACCOUNT_ADMIN', 'u1', 'one', 'grant', 'high', 's', '{}', 0, 0),
                        ('grant|cc|snapshot:7:Manager:10..20', 'u2', 'cc', 'grant', 'high', 's', '{}', 0, 0),
                        ('burst|one|burst:x:1', 'u3', 'one', 'burst', 'high', 's', '{}', 0, 0);",
            )
            .unwrap();
        }
        drop(Store::open(&path).unwrap());
        let c = Connection::open(&path).unwrap();
        let users: Vec<(String, bool, i64, String, String)> = c
            .prepare("SELECT user_id, privileged, fingerprint, raw, roles FROM users ORDER BY account, user_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let privileged: Vec<(&str, bool)> = users.iter().map(|u| (u.0.as_str(), u.1)).collect();
        assert_eq!(
            privileged,
            [
                ("7", true),
                ("8", false),
                ("9", false),
                ("admin", true),
                ("tlm", true),
                ("viewer", false)
            ]
        );
        for (id, _, fp, raw, roles) in &users {
            if id == "9" {
                assert_eq!(*fp, 42, "unreadable roles: the old fingerprint is kept");
                continue;
            }
            let roles: Vec<String> = serde_json::from_str(roles).unwrap();
            assert_eq!(*fp, domain::user_fingerprint(raw, "ACTIVE", &roles), "{id}");
        }
        let links: Vec<(String, Option<i64>)> = c
            .prepare("SELECT uid, role_change_seq FROM alerts ORDER BY uid")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            links,
            [
                ("u1".to_string(), Some(1)),
                ("u2".to_string(), Some(2)),
                ("u3".to_string(), None)
            ]
        );
    }

    /// Stored values outside the domain's sets are reported as corrupt rows naming the table,
    /// the row and the column, instead of defaulting: a status, roles that are not a JSON array,
    /// a change direction, evidence without its time, a coverage day.
    #[test]
    fn corrupt_rows_are_reported_not_defaulted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aw.db");
        let store = Store::open(&path).unwrap();
        let c = Connection::open(&path).unwrap();
        #[track_caller]
        fn err_of<T>(r: crate::store::Result<T>) -> String {
            match r {
                Ok(_) => panic!("no error"),
                Err(e) => e.to_string(),
            }
        }

        add_user(&c, "a", "u1", r#"["X"]"#);
        c.execute("UPDATE users SET status = 'bogus' WHERE user_id = 'u1'", [])
            .unwrap();
        let e = err_of(store.load_users("a"));
        assert!(
            e.contains(r#"corrupt row: users user "u1": status "bogus""#),
            "{e}"
        );
        c.execute(
            "UPDATE users SET status = 'active', roles = 'x' WHERE user_id = 'u1'",
            [],
        )
        .unwrap();
        let e = err_of(store.list_users(Some("a")));
        assert!(
            e.contains(r#"corrupt row: users user "u1": roles "x""#),
            "{e}"
        );
        c.execute("UPDATE users SET roles = '[]'", []).unwrap();
        assert_eq!(store.load_users("a").unwrap().len(), 1);

        c.execute(
            "INSERT INTO role_changes (seq, account, user_id, role, change, event_id, source)
             VALUES (7, 'a', 'u1', 'R', 'granted', 'ev', 'audit')",
            [],
        )
        .unwrap();
        let e = err_of(store.role_changes("a", None));
        assert!(
            e.contains("corrupt row: role_changes seq 7: event_ms \"NULL\""),
            "{e}"
        );
        c.execute(
            "UPDATE role_changes SET event_ms = 5, change = 'given' WHERE seq = 7",
            [],
        )
        .unwrap();
        let e = err_of(store.role_changes("a", None));
        assert!(
            e.contains(r#"corrupt row: role_changes seq 7: change "given""#),
            "{e}"
        );

        c.execute(
            "INSERT INTO coverage (account, action_filter, day, complete, received, read_ms)
             VALUES ('a', '', '2026-06-31', 1, 0, 0)",
            [],
        )
        .unwrap();
        let from = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let to = chrono::NaiveDate::from_ymd_opt(2026, 12, 31).unwrap();
        let e = err_of(store.coverage("a", "", from, to));
        assert!(
            e.contains(r#"corrupt row: coverage ("a", "2026-06-31"): day"#),
            "{e}"
        );
    }
}
