//! `users` and `role-changes`: the user directory and its role history, from the database only.

use std::process::ExitCode;

use super::{load_config, open_existing_db, to_stdout, Cli, CliError, UsersArgs};

/// `auditwarden role-changes`.
pub(super) fn role_changes(
    cli: &Cli,
    account: Option<&str>,
    user: Option<&str>,
    role: Option<&str>,
    format: crate::report_users::UsersFormat,
) -> Result<ExitCode, CliError> {
    let cfg = load_config(cli)?;
    let accounts = cfg.select_accounts(account).map_err(CliError::usage)?;
    let store = open_existing_db(&cfg)?;
    let query = crate::report_users::RoleChangesQuery {
        accounts: accounts.iter().map(|a| a.name.clone()).collect(),
        user: user.map(str::to_string),
        role: role.map(str::to_string),
    };
    to_stdout(|w| crate::report_users::write_role_changes(&store, &query, format, w))?;
    Ok(ExitCode::SUCCESS)
}

/// `auditwarden users`.
pub(super) fn users(cli: &Cli, args: &UsersArgs) -> Result<ExitCode, CliError> {
    let cfg = load_config(cli)?;
    if let Some(a) = &args.account {
        cfg.select_accounts(Some(a)).map_err(CliError::usage)?;
    }
    let status = match &args.status {
        None => None,
        Some(st) => Some(crate::domain::UserStatus::parse(st).ok_or_else(|| {
            CliError::usage(format!(
                "--status {st:?} is not one of invited, active, locked, disabled, expired, deleted, unknown"
            ))
        })?),
    };
    let store = open_existing_db(&cfg)?;
    let query = crate::report_users::UsersQuery {
        account: args.account.clone(),
        status,
        role: args.role.clone(),
        stale_invite_days: cfg.users.stale_invite_days,
        now: crate::clock::now(),
    };
    to_stdout(|w| crate::report_users::write_users(&store, &query, args.format, w))?;
    Ok(ExitCode::SUCCESS)
}
