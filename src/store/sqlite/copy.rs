//! `store copy` on SQLite: rows out of and into the tables of [`crate::store::copy::TABLES`].

use rusqlite::types::{Value, ValueRef};

use super::{err, Sqlite};
use crate::store::copy::{CopyStore, CopyTable, CopyValue};
use crate::store::Result;

fn columns(t: &CopyTable) -> String {
    t.columns
        .iter()
        .map(|(c, _)| *c)
        .collect::<Vec<_>>()
        .join(", ")
}

impl CopyStore for Sqlite {
    fn copy_out(&self, t: &CopyTable, f: &mut dyn FnMut(Vec<CopyValue>) -> bool) -> Result<u64> {
        let what = format!("copy {}", t.name);
        let mut st = self
            .conn
            .prepare(&format!("SELECT {} FROM {}", columns(t), t.name))
            .map_err(|e| self.err(&what, e))?;
        let mut rows = st.query([]).map_err(|e| self.err(&what, e))?;
        let mut n = 0;
        while let Some(r) = rows.next().map_err(|e| self.err(&what, e))? {
            let mut row = Vec::with_capacity(t.columns.len());
            for i in 0..t.columns.len() {
                row.push(match r.get_ref(i).map_err(|e| self.err(&what, e))? {
                    ValueRef::Null => CopyValue::Null,
                    ValueRef::Integer(v) => CopyValue::Int(v),
                    ValueRef::Real(v) => CopyValue::Real(v),
                    ValueRef::Text(v) => CopyValue::Text(String::from_utf8_lossy(v).into_owned()),
                    ValueRef::Blob(v) => CopyValue::Bytes(v.to_vec()),
                });
            }
            if !f(row) {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    fn copy_in(&mut self, t: &CopyTable, rows: &[Vec<CopyValue>]) -> Result<u64> {
        let path = self.path.clone();
        let what = format!("copy into {}", t.name);
        let tx = self.write_tx().map_err(|e| err(&path, &what, e))?;
        let mut n = 0u64;
        {
            let marks: Vec<String> = (1..=t.columns.len()).map(|i| format!("?{i}")).collect();
            // Events carry their dedup key (`migrations::EVENT_KEYS`), which the source does not
            // copy: it is computed from the id, and a row whose account and id are already
            // stored is skipped as the writer skips it.
            let event_cols = (t.name == "events")
                .then(|| {
                    let at = |c: &str| t.columns.iter().position(|(n, _)| *n == c);
                    at("account").zip(at("event_id"))
                })
                .flatten();
            let sql = match event_cols {
                Some((a, e)) => {
                    let k = t.columns.len() + 1;
                    format!(
                        "INSERT OR IGNORE INTO events ({}, event_key) SELECT {}, ?{k}
                         WHERE NOT EXISTS (SELECT 1 FROM events
                            WHERE event_key = ?{k} AND account = ?{} AND event_id = ?{})",
                        columns(t),
                        marks.join(", "),
                        a + 1,
                        e + 1
                    )
                }
                None => format!(
                    "INSERT OR IGNORE INTO {} ({}) VALUES ({})",
                    t.name,
                    columns(t),
                    marks.join(", ")
                ),
            };
            let mut st = tx.prepare(&sql).map_err(|e| err(&path, &what, e))?;
            for row in rows {
                let mut values: Vec<Value> = row
                    .iter()
                    .map(|v| match v {
                        CopyValue::Null => Value::Null,
                        CopyValue::Int(i) => Value::Integer(*i),
                        CopyValue::Text(s) => Value::Text(s.clone()),
                        CopyValue::Bytes(b) => Value::Blob(b.clone()),
                        CopyValue::Real(f) => Value::Real(*f),
                    })
                    .collect();
                if let Some((_, e)) = event_cols {
                    let key = match row.get(e) {
                        Some(CopyValue::Text(id)) => {
                            Value::Integer(crate::store::event_key::event_key(id))
                        }
                        _ => Value::Null,
                    };
                    values.push(key);
                }
                n += st
                    .execute(rusqlite::params_from_iter(values))
                    .map_err(|e| err(&path, &what, e))? as u64;
            }
        }
        tx.commit().map_err(|e| err(&path, &what, e))?;
        Ok(n)
    }
}
