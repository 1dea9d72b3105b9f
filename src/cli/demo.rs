//! `demo`: runs `crate::demo` and prints each step it reports as it arrives, then the result.

use std::io::Write;
use std::process::ExitCode;

use super::collect::print_summaries;
use super::{CliError, DemoArgs};

/// `auditwarden demo`: the demo runs, and each step it reports is printed as it arrives.
pub(super) async fn demo(args: &DemoArgs) -> Result<ExitCode, CliError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let opts = crate::demo::DemoOptions {
        db: args.db.clone(),
        events: args.events,
        days: args.days,
        faults: args.faults.clone(),
    };
    let demo = crate::demo::run(opts, tx);
    tokio::pin!(demo);
    let mut out = std::io::stdout();
    let result = loop {
        tokio::select! {
            biased;
            Some(step) = rx.recv() => print_demo_step(&mut out, step)?,
            r = &mut demo => break r,
        }
    };
    while let Ok(step) = rx.try_recv() {
        print_demo_step(&mut out, step)?;
    }
    let outcome = result.map_err(|e| CliError::failed(format!("{e:#}")))?;
    print_demo_outcome(&mut out, &outcome)?;
    if !outcome.matches() {
        return Err(CliError::failed(
            "the demo's database does not match the simulator's ground truth",
        ));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_demo_step(out: &mut dyn Write, step: crate::demo::Step) -> std::io::Result<()> {
    use crate::demo::Step;
    match step {
        Step::SimulatorStarted {
            base,
            events,
            days,
            faults,
        } => writeln!(out, "simulator: DigiCert ONE and CertCentral on {base} ({events} events over {days} days, faults: {faults})"),
        Step::WiderBackfill {
            backfill_days,
            dormant_days,
        } => writeln!(
            out,
            "collecting {backfill_days} days: the reports look back {dormant_days} days (dormancy)"
        ),
        Step::Pass(name) => writeln!(out, "\n== {name}"),
        Step::Collected(summaries) => print_summaries(out, &summaries),
        Step::UsersSynced(users) => crate::report_users::print_user_summaries(out, &users),
        Step::Granted { user, role } => {
            writeln!(out, "\n(simulator: user {user} is granted {role})")
        }
        Step::Accepted { user } => {
            writeln!(out, "(simulator: invited user {user} accepts the invitation)")
        }
        Step::InvitationsPolled(polls) => {
            writeln!(out, "\n== invitation poll")?;
            crate::report_users::print_user_summaries(out, &polls)
        }
        Step::RoleChanges { table } => {
            writeln!(
                out,
                "\n== role changes established (audit evidence, or the snapshot window)"
            )?;
            out.write_all(table.as_bytes())
        }
        Step::AlertsStarted => writeln!(
            out,
            "\n== alerts (rules evaluated, delivered as signed webhooks to a local receiver)"
        ),
        Step::Alerts { outcome, received } => {
            for e in &outcome.evaluated {
                match &e.result {
                    Ok(c) => writeln!(
                        out,
                        "{}: {} alert(s), {} of them history older than the backfill horizon (kept, not sent)",
                        e.account, c.alerts, c.suppressed
                    )?,
                    Err(err) => writeln!(out, "{}: alerts not evaluated: {err}", e.account)?,
                }
            }
            for line in &received {
                writeln!(
                    out,
                    "  receiver got: {}",
                    line.replace(|c: char| c.is_control(), " ")
                )?;
            }
            for (sink, c) in &outcome.delivery.per_sink {
                let (sent, failed, pending) = (c.sent, c.failed, c.pending);
                writeln!(
                    out,
                    "delivered to {sink}: {sent} sent, {failed} failed, {pending} pending"
                )?;
            }
            writeln!(out, "the receiver got {} alert(s)", received.len())
        }
        Step::ReportsWritten { dir, files } => {
            writeln!(out, "\n== reports (from the database alone)")?;
            for (file, rows) in &files {
                writeln!(out, "  {}/{file} ({rows} rows)", dir.display())?;
            }
            writeln!(out, "  {}/manifest.json (SHA-256 of each file)", dir.display())
        }
    }
}

fn print_demo_outcome(out: &mut dyn Write, o: &crate::demo::DemoOutcome) -> std::io::Result<()> {
    writeln!(out, "\n== result")?;
    writeln!(
        out,
        "database {}: {} events stored for demo-one, {} quarantined",
        o.db.display(),
        o.stored,
        o.quarantined
    )?;
    writeln!(
        out,
        "simulator ground truth: {} well-formed events, {} malformed",
        o.truth_events, o.truth_malformed
    )?;
    if o.matches() {
        writeln!(
            out,
            "every event stored exactly once: nothing missing, nothing extra"
        )?;
    } else {
        writeln!(
            out,
            "MISMATCH: {} missing, {} not in the simulator",
            o.missing, o.extra
        )?;
    }
    writeln!(out, "\nalerts: `auditwarden alerts` lists them (with a config whose [store] path is {}); docs/alerts.md has the payload", o.db.display())?;
    writeln!(out, "daemon: `auditwarden run` schedules all of this ([schedule] in config/auditwarden.example.toml), with /healthz, /readyz and /metrics on [daemon] listen")?;
    writeln!(out, "\nnext: query {} with sqlite3, or write a config from config/auditwarden.example.toml and run `auditwarden status`, `auditwarden users`, `auditwarden role-changes` or `auditwarden export events --format csv`", o.db.display())
}
