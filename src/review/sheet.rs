//! The decision sheet: one row per frozen item with empty `decision`, `justification` and
//! `reviewer` columns (filled in with the current decision once there is one). CSV is
//! spreadsheet-safe like every CSV auditwarden writes; XLSX (rust_xlsxwriter) has a drop-down
//! (keep | revoke | unsure) on `decision`, a frozen header row and column widths.

use std::io::Write;

use rust_xlsxwriter::{DataValidation, Format, Workbook};

use super::{at, campaign, current_decisions, ReviewError};
use crate::export::{neutralize, rfc3339};
use crate::store::{ReviewItem, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SheetFormat {
    Csv,
    Xlsx,
}

/// The decisions a reviewer may enter.
pub const DECISIONS: [&str; 3] = ["keep", "revoke", "unsure"];

/// The sheet's columns, in order, with their XLSX widths. `import` finds columns by these names.
pub(super) const COLUMNS: [(&str, f64); 17] = [
    ("campaign", 9.0),
    ("item", 6.0),
    ("account", 12.0),
    ("user_id", 24.0),
    ("user", 22.0),
    ("email", 28.0),
    ("type", 10.0),
    ("status", 9.0),
    ("role", 20.0),
    ("privileged", 10.0),
    ("last_activity", 24.0),
    ("dormant", 9.0),
    ("granted", 48.0),
    ("granted_by", 22.0),
    ("decision", 11.0),
    ("justification", 40.0),
    ("reviewer", 26.0),
];

/// The index of the `decision` column.
const DECISION_COL: u16 = 14;

fn cells(campaign_id: i64, it: &ReviewItem) -> [String; 14] {
    [
        campaign_id.to_string(),
        it.item_no.to_string(),
        it.account.clone(),
        it.user_id.clone(),
        it.user_name.clone().unwrap_or_default(),
        it.email.clone().unwrap_or_default(),
        it.user_type.clone().unwrap_or_default(),
        it.status.clone(),
        it.role.clone(),
        it.privileged.to_string(),
        it.last_activity_ms
            .map(|t| rfc3339(at(t)))
            .unwrap_or_default(),
        it.dormant.to_string(),
        it.granted.clone(),
        it.granted_by_email
            .clone()
            .or(it.granted_by_name.clone())
            .or(it.granted_by_id.clone())
            .unwrap_or_default(),
    ]
}

/// Write campaign `id`'s decision sheet. Returns the number of rows.
pub fn export(
    store: &Store,
    id: i64,
    format: SheetFormat,
    out: &mut dyn Write,
) -> Result<u64, ReviewError> {
    let c = campaign(store, id)?;
    let items = store.review_items(id)?;
    let decisions = store.review_decisions(id)?;
    let current = current_decisions(&decisions);
    let filled = |it: &ReviewItem| -> [String; 3] {
        match current.get(&it.item_no) {
            Some(d) => [
                d.decision.clone(),
                d.justification.clone(),
                d.reviewer.clone(),
            ],
            None => Default::default(),
        }
    };
    match format {
        SheetFormat::Csv => {
            let mut w = csv::WriterBuilder::new()
                .terminator(csv::Terminator::CRLF)
                .from_writer(out);
            w.write_record(COLUMNS.iter().map(|(k, _)| *k))?;
            for it in &items {
                let row = cells(c.id, it);
                let dec = filled(it);
                w.write_record(
                    row.iter()
                        .chain(dec.iter())
                        .map(|s| neutralize(s).into_owned()),
                )?;
            }
            w.flush()?;
        }
        SheetFormat::Xlsx => {
            let bytes = xlsx(&c.name, c.id, &items, &filled)
                .map_err(|e| ReviewError::Sheet(format!("writing the XLSX sheet: {e}")))?;
            out.write_all(&bytes)?;
        }
    }
    Ok(items.len() as u64)
}

fn xlsx(
    name: &str,
    id: i64,
    items: &[ReviewItem],
    filled: &dyn Fn(&ReviewItem) -> [String; 3],
) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet();
    ws.set_name(format!("Review {id}"))?;
    let header = Format::new().set_bold().set_background_color("EEF1F6");
    for (i, (key, width)) in COLUMNS.iter().enumerate() {
        let col = i as u16;
        ws.write_string_with_format(0, col, *key, &header)?;
        ws.set_column_width(col, *width)?;
    }
    for (r, it) in items.iter().enumerate() {
        let row = r as u32 + 1;
        let values = cells(id, it);
        let dec = filled(it);
        for (i, v) in values.iter().chain(dec.iter()).enumerate() {
            // Strings stay strings: a cell is never a formula, whatever it holds.
            if !v.is_empty() {
                ws.write_string(row, i as u16, v)?;
            }
        }
    }
    ws.set_freeze_panes(1, 0)?;
    let last = (items.len() as u32).max(1);
    let dv = DataValidation::new()
        .allow_list_strings(&DECISIONS)?
        .set_input_title("Decision")?
        .set_input_message("keep, revoke or unsure")?
        .set_error_title("Not a decision")?
        .set_error_message("Choose keep, revoke or unsure.")?;
    ws.add_data_validation(1, DECISION_COL, last, DECISION_COL, &dv)?;
    let _ = name;
    wb.save_to_buffer()
}
