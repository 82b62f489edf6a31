//! Logging and metrics. Logging: `tracing` to stderr, human-readable or JSON. The level comes from
//! `ESR_INGEST_LOG` (or `RUST_LOG`), with a per-command default. Text logs are coloured
//! only when stderr is a terminal, so files and log collectors get plain text.

pub mod heartbeat;
pub mod metrics;

use tracing_subscriber::EnvFilter;

/// How logs are written on stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

pub fn init(format: LogFormat, default_level: &str) {
    let filter = std::env::var("ESR_INGEST_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|s| EnvFilter::try_new(s).ok())
        // lapin logs, from its own thread, errors its caller gets too (a refused
        // declaration, a closed channel): those reach the log once, with their context,
        // from the code that handles them, and a failing command keeps its one error
        // line last. `ESR_INGEST_LOG=...,lapin=debug` shows them.
        .unwrap_or_else(|| EnvFilter::new(format!("{default_level},lapin=off")));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::secrets::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
}
