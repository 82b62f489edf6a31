//! The command line (contract §5). `anyhow` lives only here and in `main`.

mod audit;
mod backfill;
mod dlq;
mod generate;
mod inspect;
mod layout;
mod run;
mod signals;
mod skip;

use crate::config::{ConfigError, LogFormat, Overrides, Settings};
use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

pub use crate::service::wiring::fault_summary;

/// Exit codes.
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
/// `audit` found discrepancies; `layout check` rejected a line.
pub const EXIT_FINDINGS: i32 = 3;

#[derive(Debug, Parser)]
#[command(name = "esr-ingest", version, about = "Ordered, version-checked ingestion of sequenced batch files")]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "ESR_INGEST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A directory path, or s3://bucket/prefix.
    #[arg(long, global = true, env = "ESR_INGEST_SOURCE", value_name = "SRC")]
    pub source: Option<String>,
    /// A SQLite file path, or a mongodb:// / mongodb+srv:// URI.
    #[arg(long, global = true, env = "ESR_INGEST_STORE", value_name = "STORE")]
    pub store: Option<String>,
    /// An amqp:// or amqps:// URL; without it records are applied in-process.
    #[arg(long, global = true, env = "ESR_INGEST_BROKER", value_name = "URL")]
    pub broker: Option<String>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The long-running service: discover, sequence, apply, serve health.
    Run {
        /// Process everything that can be processed now, then exit.
        #[arg(long)]
        once: bool,
        /// Health server address (overrides `listen` of the configuration's health section).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Process the files whose name date is in [from, to] under the version rule.
    Backfill {
        #[arg(long, value_name = "YYYY-MM-DD")]
        from: NaiveDate,
        #[arg(long, value_name = "YYYY-MM-DD")]
        to: NaiveDate,
        /// Only this region (repeatable).
        #[arg(long = "region", value_name = "R")]
        regions: Vec<String>,
        /// Only list the files.
        #[arg(long)]
        dry_run: bool,
    },
    /// Streams, held files, gaps, quarantined files, counters.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The current records as JSON Lines, sorted by (type, key).
    Export {
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Operator actions on a region's sequence.
    Sequence {
        #[command(subcommand)]
        action: SequenceAction,
    },
    /// Rejected lines with file, line and reason.
    Rejects {
        #[arg(long, value_name = "NAME")]
        file: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Compare the source, the ledger and the store; exit 3 when anything is wrong.
    Audit {
        /// Only files whose name date is on or after this day.
        #[arg(long, value_name = "YYYY-MM-DD")]
        from: Option<NaiveDate>,
        /// Only files whose name date is on or before this day.
        #[arg(long, value_name = "YYYY-MM-DD")]
        to: Option<NaiveDate>,
        /// How long a file may stay held, in flight or quarantined before it is a finding.
        #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = humantime::parse_duration)]
        stuck_after: std::time::Duration,
        #[arg(long)]
        json: bool,
    },
    /// The broker's dead-letter queue (needs --broker).
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Work on record layouts.
    Layout {
        #[command(subcommand)]
        action: LayoutAction,
    },
    /// Write synthetic files in the default profile.
    Generate {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Comma-separated regions (default: 13 ESR regions).
        #[arg(long, value_delimiter = ',', value_name = "A,B")]
        regions: Vec<String>,
        #[arg(long, default_value_t = 3)]
        days: u32,
        #[arg(long, value_name = "YYYY-MM-DD", default_value = "2022-07-29")]
        start: NaiveDate,
        /// Records per file.
        #[arg(long, default_value_t = 100)]
        records: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum LayoutAction {
    /// Show what a layout makes of sample files, line by line (exit 3 when a line is
    /// rejected or a file has a file-level fault).
    Check {
        /// The layout file (default: the profile's layout).
        #[arg(long, value_name = "FILE")]
        layout: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        /// Sample files.
        #[arg(required = true, value_name = "SAMPLE")]
        samples: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SequenceAction {
    /// Mark SEQ n of region R as skipped (recorded with its reason).
    Skip {
        #[arg(long, value_name = "R")]
        region: String,
        #[arg(long, value_name = "N")]
        seq: u64,
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// Show dead-lettered messages (they stay in the queue).
    List {
        #[arg(long)]
        json: bool,
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Put dead-lettered messages back on the records queue (safe: the version rule).
    Replay {
        /// Only the messages of this file.
        #[arg(long, value_name = "NAME")]
        file: Option<String>,
    },
    /// Delete every dead-lettered message for good.
    Purge {
        /// Confirms the deletion.
        #[arg(long)]
        yes: bool,
    },
}

/// A failure that is the user's to fix in the arguments: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl From<ConfigError> for UsageError {
    fn from(e: ConfigError) -> Self {
        UsageError(e.0)
    }
}

fn settings(cli: &Cli) -> Result<Settings, UsageError> {
    let overrides = Overrides {
        source: cli.source.clone(),
        store: cli.store.clone(),
        broker: cli.broker.clone(),
        log_format: cli.log_format,
        webhook_url: std::env::var("ESR_INGEST_WEBHOOK_URL").ok().filter(|u| !u.is_empty()),
    };
    Ok(Settings::load(cli.config.as_deref(), overrides)?)
}

/// Runs the parsed command; returns the exit code.
pub async fn execute(cli: Cli) -> anyhow::Result<i32> {
    if let Command::Generate { out, regions, days, start, records, seed } = &cli.command {
        crate::telemetry::init(cli.log_format.unwrap_or_default(), "warn");
        return generate::generate(out, regions, *days, *start, *records, *seed);
    }
    let settings = settings(&cli)?;
    let default_level = match cli.command {
        Command::Run { .. } | Command::Backfill { .. } => "info",
        _ => "warn",
    };
    crate::telemetry::init(settings.log_format, default_level);
    match cli.command {
        Command::Run { once, listen } => run::run(settings, once, listen).await,
        Command::Backfill { from, to, regions, dry_run } => {
            if from > to {
                return Err(UsageError(format!("--from {from} is after --to {to}")).into());
            }
            backfill::backfill(settings, from, to, regions, dry_run).await
        }
        Command::Status { json } => inspect::status(settings, json).await,
        Command::Export { output } => inspect::export(settings, output).await,
        Command::Rejects { file, json } => inspect::rejects(settings, file, json).await,
        Command::Sequence { action: SequenceAction::Skip { region, seq, reason } } => {
            skip::skip(settings, region, seq, reason).await
        }
        Command::Dlq { action } => dlq::dlq(settings, action).await,
        Command::Audit { from, to, stuck_after, json } => {
            if let (Some(f), Some(t)) = (from, to)
                && f > t
            {
                return Err(UsageError(format!("--from {f} is after --to {t}")).into());
            }
            audit::audit(settings, from, to, stuck_after, json).await
        }
        Command::Layout { action: LayoutAction::Check { layout, json, samples } } => {
            layout::check(&settings, layout, &samples, json)
        }
        Command::Generate { .. } => Ok(EXIT_OK), // handled above
    }
}
