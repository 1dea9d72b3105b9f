//! `review import ID FILE`: a filled decision sheet (CSV, or XLSX read with calamine) checked row
//! by row against the frozen population. Recorded all or nothing: any unknown or altered item,
//! bad decision, missing justification or reviewer, a reviewer deciding on their own access or on
//! a grant they made themselves, rejects the file and lists every such row. Re-importing the same
//! decisions records nothing; a changed decision is a new row (the earlier one stays as history).

use std::collections::{HashMap, HashSet};
use std::io::{Cursor, Read};
use std::path::Path;

use calamine::{Data, Reader};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::sheet::DECISIONS;
use super::{campaign, current_decisions, same_person, ReviewError};
use crate::store::{Decision, ReviewItem, ReviewRefusal, Store};

/// A decision sheet larger than this is refused before it is parsed (one row is under 1 KiB; a
/// campaign of 100,000 items fits several times over).
const MAX_SHEET_BYTES: u64 = 64 * 1024 * 1024;

/// What an import recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    /// New decisions (first or changed).
    pub recorded: u64,
    /// Rows whose decision was already the current one.
    pub unchanged: u64,
    /// Rows with no decision yet.
    pub undecided: u64,
}

/// A spreadsheet cell as text: integers without a fraction, dates as the sheet wrote them.
fn cell_text(d: &Data) -> String {
    match d {
        Data::Empty => String::new(),
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        other => other.to_string(),
    }
}

/// Undo the CSV neutralization (`export::neutralize`): a leading apostrophe before a character a
/// spreadsheet would run as a formula.
fn denormalize(s: &str) -> String {
    let t = s.trim_end_matches(['\r', '\n']);
    match t.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@', '\t', '\r']) => rest.to_string(),
        _ => t.to_string(),
    }
}

/// The rows of a sheet as text, the header first.
fn read_rows(path: &Path, bytes: Vec<u8>) -> Result<Vec<Vec<String>>, ReviewError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let shown = path.display().to_string();
    match ext.as_str() {
        "xlsx" | "xlsm" | "ods" | "xls" => {
            let mut book = calamine::open_workbook_auto_from_rs(Cursor::new(bytes))
                .map_err(|e| ReviewError::Sheet(format!("{shown}: not a readable spreadsheet: {e}")))?;
            let range = book
                .worksheet_range_at(0)
                .ok_or_else(|| ReviewError::Sheet(format!("{shown}: the workbook has no sheet")))?
                .map_err(|e| ReviewError::Sheet(format!("{shown}: first sheet: {e}")))?;
            Ok(range
                .rows()
                .map(|r| r.iter().map(cell_text).collect())
                .collect())
        }
        "csv" => {
            let mut rd = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(bytes.as_slice());
            let mut rows = Vec::new();
            for rec in rd.records() {
                let rec = rec.map_err(|e| ReviewError::Sheet(format!("{shown}: {e}")))?;
                rows.push(rec.iter().map(str::to_string).collect());
            }
            Ok(rows)
        }
        _ => Err(ReviewError::Usage(format!(
            "{shown}: not a decision sheet: expected a .csv or .xlsx file (as `review export` writes)"
        ))),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, ReviewError> {
    let io = |source| ReviewError::Io {
        path: path.display().to_string(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    f.take(MAX_SHEET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_SHEET_BYTES {
        return Err(ReviewError::Usage(format!(
            "{}: larger than {} MiB: not a decision sheet",
            path.display(),
            MAX_SHEET_BYTES / 1024 / 1024
        )));
    }
    Ok(bytes)
}

/// Import a filled sheet into campaign `id`.
pub fn import(
    store: &mut Store,
    id: i64,
    path: &Path,
    default_reviewer: Option<&str>,
    now: DateTime<Utc>,
) -> Result<ImportOutcome, ReviewError> {
    let c = campaign(store, id)?;
    if c.closed_ms.is_some() {
        return Err(ReviewError::Refused(format!(
            "review campaign {id} is closed: its decisions are frozen"
        )));
    }
    let bytes = read_file(path)?;
    let sha = hex::encode(Sha256::digest(&bytes));
    let rows = read_rows(path, bytes)?;
    let shown = path.display().to_string();
    let Some((header, body)) = rows.split_first() else {
        return Err(ReviewError::Sheet(format!("{shown}: the sheet is empty")));
    };
    let col: HashMap<String, usize> = header
        .iter()
        .enumerate()
        .map(|(i, h)| (h.trim().to_ascii_lowercase(), i))
        .collect();
    let required = [
        "item",
        "account",
        "user_id",
        "role",
        "decision",
        "justification",
        "reviewer",
    ];
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|k| !col.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Err(ReviewError::Sheet(format!(
            "{shown}: not a decision sheet of `review export`: no column {}",
            missing.join(", ")
        )));
    }
    let items = store.review_items(id)?;
    let by_no: HashMap<i64, &ReviewItem> = items.iter().map(|i| (i.item_no, i)).collect();
    let decisions = store.review_decisions(id)?;
    let current = current_decisions(&decisions);
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();

    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    let mut new = Vec::new();
    let mut outcome = ImportOutcome::default();
    for (i, row) in body.iter().enumerate() {
        // Row numbers as a spreadsheet shows them: the header is row 1.
        let line = i + 2;
        let get = |k: &str| -> String {
            col.get(k)
                .and_then(|&c| row.get(c))
                .map(|s| denormalize(s))
                .unwrap_or_default()
        };
        if row.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        if let Some(camp) = col.get("campaign").and_then(|&c| row.get(c)) {
            let camp = camp.trim();
            if !camp.is_empty() && camp != id.to_string() {
                errors.push(format!(
                    "row {line}: belongs to campaign {camp}, not {id} (a sheet of another campaign)"
                ));
                continue;
            }
        }
        let item_text = get("item");
        let Ok(no) = item_text.trim().parse::<i64>() else {
            errors.push(format!(
                "row {line}: item {:?} is not an item number of campaign {id} (unknown item)",
                item_text
            ));
            continue;
        };
        let Some(item) = by_no.get(&no) else {
            errors.push(format!(
                "row {line}: item {no} is not in campaign {id} (unknown item)"
            ));
            continue;
        };
        let mut altered = Vec::new();
        for (k, frozen) in [
            ("account", &item.account),
            ("user_id", &item.user_id),
            ("role", &item.role),
        ] {
            let v = get(k);
            if v.trim() != frozen.as_str() {
                altered.push(format!(
                    "{k} is {v:?}, the frozen population says {frozen:?}"
                ));
            }
        }
        if !altered.is_empty() {
            errors.push(format!(
                "row {line}: item {no} was altered: {}",
                altered.join("; ")
            ));
            continue;
        }
        if !seen.insert(no) {
            errors.push(format!("row {line}: item {no} appears more than once"));
            continue;
        }
        let decision = get("decision").trim().to_ascii_lowercase();
        if decision.is_empty() {
            outcome.undecided += 1;
            continue;
        }
        if !DECISIONS.contains(&decision.as_str()) {
            errors.push(format!(
                "row {line}: item {no}: decision {decision:?} is not one of keep, revoke, unsure"
            ));
            continue;
        }
        let justification = get("justification").trim().to_string();
        if justification.is_empty() {
            errors.push(format!(
                "row {line}: item {no}: a {decision} decision needs a justification"
            ));
            continue;
        }
        let cell = get("reviewer").trim().to_string();
        let reviewer = if cell.is_empty() {
            default_reviewer
                .map(|r| r.trim().to_string())
                .unwrap_or_default()
        } else {
            cell
        };
        if reviewer.is_empty() {
            errors.push(format!(
                "row {line}: item {no}: no reviewer (fill the reviewer column or pass --reviewer EMAIL)"
            ));
            continue;
        }
        if !c.reviewers.is_empty() && !c.reviewers.iter().any(|r| same_person(r, &reviewer)) {
            errors.push(format!(
                "row {line}: item {no}: {reviewer} is not a reviewer of campaign {id} (reviewers: {})",
                c.reviewers.join(", ")
            ));
            continue;
        }
        let whose = format!(
            "{} {} of {}",
            item.account,
            item.role,
            item.user_name.as_deref().unwrap_or(&item.user_id)
        );
        let own = item
            .email
            .as_deref()
            .is_some_and(|e| same_person(e, &reviewer))
            || item
                .user_name
                .as_deref()
                .is_some_and(|n| same_person(n, &reviewer));
        if own {
            errors.push(format!(
                "row {line}: item {no}: refused: {reviewer} may not review their own access ({whose})"
            ));
            continue;
        }
        let granter = [
            item.granted_by_email.as_deref(),
            item.granted_by_name.as_deref(),
        ]
        .into_iter()
        .flatten()
        .any(|g| same_person(g, &reviewer));
        if granter {
            errors.push(format!(
                "row {line}: item {no}: refused: {reviewer} granted this role themselves ({whose}, {})",
                item.granted
            ));
            continue;
        }
        let same = current.get(&no).is_some_and(|d| {
            d.decision == decision && d.justification == justification && d.reviewer == reviewer
        });
        if same {
            outcome.unchanged += 1;
            continue;
        }
        new.push(Decision {
            item_no: no,
            decision,
            justification,
            reviewer,
            decided_ms: now.timestamp_millis(),
            source_file: file_name.clone(),
            source_sha256: sha.clone(),
        });
    }
    if !errors.is_empty() {
        return Err(ReviewError::Invalid {
            file: shown,
            rows: errors,
        });
    }
    if !new.is_empty() {
        match store.record_review_decisions(id, &new)? {
            Ok(n) => outcome.recorded = n,
            Err(ReviewRefusal::Closed(_)) => {
                return Err(ReviewError::Refused(format!(
                    "review campaign {id} was closed while importing: nothing recorded"
                )))
            }
            Err(ReviewRefusal::NoSuchCampaign) => {
                return Err(ReviewError::Usage(format!("no review campaign {id}")))
            }
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CSV neutralization is undone for formula characters only.
    #[test]
    fn denormalize_strips_only_the_neutralizing_apostrophe() {
        assert_eq!(denormalize("'=SUM(1)"), "=SUM(1)");
        assert_eq!(denormalize("'quoted"), "'quoted");
        assert_eq!(denormalize("plain"), "plain");
    }
}
