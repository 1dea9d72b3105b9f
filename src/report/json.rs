//! JSON: one object, written as it streams: the header fields of [`Meta`], then `rows` (one object
//! per row, keyed by column, strings exactly as stored), then `summary` and `row_count`. The
//! schema is documented in `docs/report-schema.md`.

use std::io::Write;

use super::{Cell, Meta, ReportError, Sink, Summary};
use crate::export::push_rfc3339;

pub(super) struct JsonSink<'a> {
    out: &'a mut dyn Write,
    /// Each column's `"key":`, encoded once.
    keys: Vec<Vec<u8>>,
    /// One row's bytes, written to `out` at once (one call per row, not per field).
    row_buf: Vec<u8>,
    /// A time's text.
    time_buf: String,
    rows: u64,
}

impl<'a> JsonSink<'a> {
    pub(super) fn new(out: &'a mut dyn Write) -> JsonSink<'a> {
        JsonSink {
            out,
            keys: Vec::new(),
            row_buf: Vec::new(),
            time_buf: String::new(),
            rows: 0,
        }
    }
}

impl Sink for JsonSink<'_> {
    fn begin(&mut self, meta: &Meta) -> Result<(), ReportError> {
        self.keys = meta
            .columns
            .iter()
            .map(|c| {
                let mut k = serde_json::to_vec(c.key)?;
                k.push(b':');
                Ok(k)
            })
            .collect::<Result<_, serde_json::Error>>()?;
        let mut head = serde_json::to_string_pretty(meta)?;
        // Keep the object open: the rows follow the header fields.
        if head.ends_with('}') {
            head.pop();
        }
        let head = head.trim_end();
        self.out.write_all(head.as_bytes())?;
        self.out.write_all(b",\n  \"rows\": [")?;
        Ok(())
    }

    fn row(&mut self, cells: &[Cell]) -> Result<(), ReportError> {
        // Written field by field (no map per row); every string goes through serde_json.
        let out = &mut self.row_buf;
        out.clear();
        out.extend_from_slice(if self.rows == 0 {
            b"\n    {"
        } else {
            b",\n    {"
        });
        for (i, (k, c)) in self.keys.iter().zip(cells).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(k);
            match c {
                Cell::Null => out.extend_from_slice(b"null"),
                Cell::Text(s) => serde_json::to_writer(&mut *out, s)?,
                Cell::Time(ms) => {
                    // Digits, '-', ':', '.', 'T' and 'Z' only: nothing to escape.
                    self.time_buf.clear();
                    push_rfc3339(&mut self.time_buf, super::at(*ms));
                    out.push(b'"');
                    out.extend_from_slice(self.time_buf.as_bytes());
                    out.push(b'"');
                }
                Cell::Int(v) => write!(out, "{v}")?,
                Cell::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
                Cell::List(v) => serde_json::to_writer(&mut *out, v)?,
            }
        }
        out.push(b'}');
        self.out.write_all(out)?;
        self.rows += 1;
        Ok(())
    }

    fn finish(&mut self, _meta: &Meta, summary: &Summary) -> Result<(), ReportError> {
        if self.rows > 0 {
            self.out.write_all(b"\n  ")?;
        }
        self.out.write_all(b"],\n  \"summary\": ")?;
        serde_json::to_writer(&mut *self.out, summary)?;
        write!(self.out, ",\n  \"row_count\": {}\n}}\n", self.rows)?;
        self.out.flush()?;
        Ok(())
    }
}
