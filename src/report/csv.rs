//! CSV: RFC 4180 (CRLF line ends, quoted as needed), UTF-8, one header row of column keys in a
//! stable order, ISO 8601 UTC timestamps, lists joined with `;`. Every text cell a spreadsheet
//! would run as a formula is neutralized with `export::neutralize` (OWASP CSV injection).
//! The header facts (period, coverage, version) are not rows: `reports run` puts them in the
//! manifest, and the CLI prints them on standard error.

use std::io::Write;

use super::{Cell, Meta, ReportError, Sink, Summary};
use crate::export::{neutralize, rfc3339};

pub(super) struct CsvSink<'a> {
    w: ::csv::Writer<&'a mut dyn Write>,
}

impl<'a> CsvSink<'a> {
    pub(super) fn new(out: &'a mut dyn Write) -> CsvSink<'a> {
        CsvSink {
            w: ::csv::WriterBuilder::new()
                .terminator(::csv::Terminator::CRLF)
                .from_writer(out),
        }
    }
}

/// One cell as CSV text.
pub(super) fn cell_text(c: &Cell) -> String {
    match c {
        Cell::Null => String::new(),
        Cell::Text(s) => neutralize(s).into_owned(),
        Cell::Time(ms) => rfc3339(super::at(*ms)),
        Cell::Int(v) => v.to_string(),
        Cell::Bool(b) => b.to_string(),
        Cell::List(v) => neutralize(&v.join(";")).into_owned(),
    }
}

impl Sink for CsvSink<'_> {
    fn begin(&mut self, meta: &Meta) -> Result<(), ReportError> {
        self.w.write_record(meta.columns.iter().map(|c| c.key))?;
        Ok(())
    }

    fn row(&mut self, cells: &[Cell]) -> Result<(), ReportError> {
        self.w.write_record(cells.iter().map(cell_text))?;
        Ok(())
    }

    fn finish(&mut self, _meta: &Meta, _summary: &Summary) -> Result<(), ReportError> {
        self.w.flush()?;
        Ok(())
    }
}
