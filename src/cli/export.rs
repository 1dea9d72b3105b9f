//! `export events`: stored events streamed out as JSONL or spreadsheet-safe CSV.

use std::path::Path;
use std::process::ExitCode;

use crate::export::{self, ExportFormat};
use crate::store::EventFilter;

use super::{
    load_config, open_existing_db, parse_when, to_stdout, write_atomically, Cli, CliError,
};

/// The flags of `export events`.
pub(super) struct EventsArgs<'a> {
    pub account: Option<&'a str>,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub action: Option<&'a str>,
    pub format: ExportFormat,
    pub out: Option<&'a Path>,
}

/// `auditwarden export events`.
pub(super) fn events(cli: &Cli, args: EventsArgs<'_>) -> Result<ExitCode, CliError> {
    let EventsArgs {
        account,
        from,
        to,
        action,
        format,
        out,
    } = args;
    let cfg = load_config(cli)?;
    if let Some(a) = account {
        cfg.select_accounts(Some(a)).map_err(CliError::usage)?;
    }
    let filter = EventFilter {
        account: account.map(str::to_string),
        from: from
            .map(|s| parse_when(s, chrono_tz::UTC, false))
            .transpose()
            .map_err(CliError::usage)?,
        to: to
            .map(|s| parse_when(s, chrono_tz::UTC, true))
            .transpose()
            .map_err(CliError::usage)?,
        action: action.map(str::to_string),
    };
    let store = open_existing_db(&cfg)?;
    let n = match out {
        Some(path) => {
            write_atomically(path, |w| export::export_events(&store, &filter, format, w))?
        }
        None => match to_stdout(|w| export::export_events(&store, &filter, format, w))? {
            Some(n) => n,
            // The reader went away: nothing more to say.
            None => return Ok(ExitCode::SUCCESS),
        },
    };
    tracing::info!(event = "export_finished", rows = n);
    Ok(ExitCode::SUCCESS)
}
