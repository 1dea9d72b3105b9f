//! `store copy` on PostgreSQL: rows out of and into the tables of
//! [`crate::store::copy::TABLES`]; a chunk goes in as one `INSERT ... SELECT FROM unnest(..)`,
//! identity keys as given (`OVERRIDING SYSTEM VALUE`), and [`CopyStore::copy_finish`] moves each
//! identity past the copied keys.

use tokio_postgres::types::ToSql;

use super::{pg_err, Postgres, Wait};
use crate::store::copy::{CopyStore, CopyTable, CopyValue, Kind, TABLES};
use crate::store::{Result, StoreError};

fn columns(t: &CopyTable) -> String {
    t.columns
        .iter()
        .map(|(c, _)| *c)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Postgres {
    fn mistyped(&self, t: &CopyTable, column: &str, v: &CopyValue) -> StoreError {
        StoreError::Corrupt {
            location: self.location.clone(),
            table: "copy".to_string(),
            row: format!("table {}, column {column}", t.name),
            what: format!("a value of the wrong type for the column: {v:?}"),
        }
    }
}

impl CopyStore for Postgres {
    fn copy_out(&self, t: &CopyTable, f: &mut dyn FnMut(Vec<CopyValue>) -> bool) -> Result<u64> {
        self.stream(
            &format!("SELECT {} FROM {}", columns(t), t.name),
            &[],
            &format!("copy {}", t.name),
            &mut |r| {
                let row = t
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, (_, kind))| {
                        match kind {
                            Kind::Int => r.get::<_, Option<i64>>(i).map(CopyValue::Int),
                            Kind::Text => r.get::<_, Option<String>>(i).map(CopyValue::Text),
                            Kind::Bytes => r.get::<_, Option<Vec<u8>>>(i).map(CopyValue::Bytes),
                            Kind::Flag => r
                                .get::<_, Option<bool>>(i)
                                .map(|b| CopyValue::Int(i64::from(b))),
                            Kind::Real => r.get::<_, Option<f64>>(i).map(CopyValue::Real),
                        }
                        .unwrap_or(CopyValue::Null)
                    })
                    .collect();
                Ok(f(row))
            },
        )
    }

    fn copy_in(&mut self, t: &CopyTable, rows: &[Vec<CopyValue>]) -> Result<u64> {
        let mut arrays: Vec<Box<dyn ToSql + Sync>> = Vec::with_capacity(t.columns.len());
        let mut casts = Vec::with_capacity(t.columns.len());
        for (i, (name, kind)) in t.columns.iter().enumerate() {
            let cell = |r: &Vec<CopyValue>| r.get(i).cloned().unwrap_or(CopyValue::Null);
            match kind {
                Kind::Int | Kind::Flag => {
                    let mut v: Vec<Option<i64>> = Vec::with_capacity(rows.len());
                    for r in rows {
                        v.push(match cell(r) {
                            CopyValue::Null => None,
                            CopyValue::Int(x) => Some(x),
                            other => return Err(self.mistyped(t, name, &other)),
                        });
                    }
                    if *kind == Kind::Flag {
                        let b: Vec<Option<bool>> = v.iter().map(|x| x.map(|x| x != 0)).collect();
                        arrays.push(Box::new(b));
                        casts.push(format!("${}::boolean[]", i + 1));
                    } else {
                        arrays.push(Box::new(v));
                        casts.push(format!("${}::bigint[]", i + 1));
                    }
                }
                Kind::Text => {
                    let mut v: Vec<Option<String>> = Vec::with_capacity(rows.len());
                    for r in rows {
                        v.push(match cell(r) {
                            CopyValue::Null => None,
                            CopyValue::Text(x) => Some(x),
                            CopyValue::Int(x) => Some(x.to_string()),
                            other => return Err(self.mistyped(t, name, &other)),
                        });
                    }
                    arrays.push(Box::new(v));
                    casts.push(format!("${}::text[]", i + 1));
                }
                Kind::Real => {
                    let mut v: Vec<Option<f64>> = Vec::with_capacity(rows.len());
                    for r in rows {
                        v.push(match cell(r) {
                            CopyValue::Null => None,
                            CopyValue::Real(x) => Some(x),
                            // SQLite keeps a whole REAL as an integer when it can.
                            CopyValue::Int(x) => Some(x as f64),
                            other => return Err(self.mistyped(t, name, &other)),
                        });
                    }
                    arrays.push(Box::new(v));
                    casts.push(format!("${}::float8[]", i + 1));
                }
                Kind::Bytes => {
                    let mut v: Vec<Option<Vec<u8>>> = Vec::with_capacity(rows.len());
                    for r in rows {
                        v.push(match cell(r) {
                            CopyValue::Null => None,
                            CopyValue::Bytes(x) => Some(x),
                            other => return Err(self.mistyped(t, name, &other)),
                        });
                    }
                    arrays.push(Box::new(v));
                    casts.push(format!("${}::bytea[]", i + 1));
                }
            }
        }
        let overriding = if t.identity.is_some() {
            "OVERRIDING SYSTEM VALUE"
        } else {
            ""
        };
        // Events carry their dedup key (schema::EVENT_KEYS), which the source does not copy: it
        // is computed from the id (the function SQLite's keys come from too), and a row whose
        // account and id are already stored is skipped, as the writer skips it.
        let event_id = (t.name == "events")
            .then(|| t.columns.iter().position(|(n, _)| *n == "event_id"))
            .flatten();
        let sql = match event_id {
            Some(at) => {
                let keys: Vec<Option<i64>> = rows
                    .iter()
                    .map(|r| match r.get(at) {
                        Some(CopyValue::Text(id)) => Some(crate::store::event_key::event_key(id)),
                        _ => None,
                    })
                    .collect();
                arrays.push(Box::new(keys));
                casts.push(format!("${}::bigint[]", casts.len() + 1));
                format!(
                    "INSERT INTO events ({0}, event_key) {1} SELECT * FROM unnest({2})
                        AS u ({0}, event_key)
                     WHERE NOT EXISTS (SELECT 1 FROM events x WHERE x.event_key = u.event_key
                        AND x.account = u.account AND x.event_id = u.event_id)
                     ON CONFLICT DO NOTHING",
                    columns(t),
                    overriding,
                    casts.join(", ")
                )
            }
            None => format!(
                "INSERT INTO {} ({}) {} SELECT * FROM unnest({}) ON CONFLICT DO NOTHING",
                t.name,
                columns(t),
                overriding,
                casts.join(", ")
            ),
        };
        let params: Vec<&(dyn ToSql + Sync)> = arrays.iter().map(|b| &**b).collect();
        let what = format!("copy into {}", t.name);
        let (tx, location) = self.tx(&what)?;
        let n = tx
            .execute(&sql, &params)
            .wait()
            .map_err(|e| pg_err(location, &what, e))?;
        tx.commit().wait().map_err(|e| pg_err(location, &what, e))?;
        Ok(n)
    }

    fn copy_finish(&mut self) -> Result<()> {
        for t in TABLES {
            if let Some(col) = t.identity {
                self.one(
                    &format!(
                        "SELECT setval(pg_get_serial_sequence('{0}', '{1}'),
                            COALESCE((SELECT MAX({1}) FROM {0}), 0) + 1, false)",
                        t.name, col
                    ),
                    &[],
                    "move identities past the copied keys",
                )?;
            }
        }
        Ok(())
    }
}
