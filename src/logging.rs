//! Structured logs on stderr through `tracing-subscriber`: human-readable text by default, one
//! JSON object per line with `--log-format json` (journald, log shippers). Log lines use a fixed
//! vocabulary of fields (`event`, `account`, `day`, `error`, ...) and never carry a secret: keys
//! live in [`crate::secret::Secret`], which does not print itself.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Install the global subscriber. `filter` is an `EnvFilter` directive (e.g. from
/// `AUDITWARDEN_LOG`), `None` for the default (`info`, quieter for HTTP internals). `colour`:
/// ANSI colours in text logs, which only a terminal shows as colours (the caller decides: stderr
/// is a terminal and `NO_COLOR` is unset); a file, a pipe or journald gets plain text.
pub fn init(format: LogFormat, filter: Option<&str>, colour: bool) {
    let filter = filter
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info,hyper=warn,reqwest=warn,rustls=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour && format == LogFormat::Text)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
