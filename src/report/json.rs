//! JSON: one object, written as it streams: the header fields of [`Meta`], then `rows` (one object
//! per row, keyed by column, strings exactly as stored), then `summary` and `row_count`. The
//! schema is documented in `docs/report-schema.md`.

use std::io::Write;

use super::{Cell, Meta, ReportError, Sink, Summary};
use crate::export::rfc3339;

pub(super) struct JsonSink<'a> {
    out: &'a mut dyn Write,
    keys: Vec<&'static str>,
    rows: u64,
}

impl<'a> JsonSink<'a> {
    pub(super) fn new(out: &'a mut dyn Write) -> JsonSink<'a> {
        JsonSink {
            out,
            keys: Vec::new(),
            rows: 0,
        }
    }
}

impl Sink for JsonSink<'_> {
    fn begin(&mut self, meta: &Meta) -> Result<(), ReportError> {
        self.keys = meta.columns.iter().map(|c| c.key).collect();
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
        let out = &mut *self.out;
        out.write_all(if self.rows == 0 {
            b"\n    {"
        } else {
            b",\n    {"
        })?;
        for (i, (k, c)) in self.keys.iter().zip(cells).enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            serde_json::to_writer(&mut *out, k)?;
            out.write_all(b":")?;
            match c {
                Cell::Null => out.write_all(b"null")?,
                Cell::Text(s) => serde_json::to_writer(&mut *out, s)?,
                Cell::Time(ms) => serde_json::to_writer(&mut *out, &rfc3339(super::at(*ms)))?,
                Cell::Int(v) => write!(out, "{v}")?,
                Cell::Bool(b) => write!(out, "{b}")?,
                Cell::List(v) => serde_json::to_writer(&mut *out, v)?,
            }
        }
        out.write_all(b"}")?;
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
