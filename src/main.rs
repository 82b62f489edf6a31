//! The `esr-ingest` binary: parses arguments, runs the command, maps errors to exit codes
//! (0 success, 1 runtime failure, 2 usage error) with one clear line on stderr.

use clap::Parser;
use esr_ingest::cli::{self, Cli, EXIT_FAILURE, EXIT_USAGE, UsageError};

/// Whether the error is stdout being closed by its reader.
fn stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        let kind = cause
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| cause.downcast_ref::<serde_json::Error>().and_then(serde_json::Error::io_error_kind));
        kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}

/// Registers every secret the process can be given before anything is printed: URLs in
/// the arguments and the environment, and the S3 secret key.
fn register_secrets() {
    for arg in std::env::args().skip(1) {
        if arg.contains("://") {
            esr_ingest::secrets::register_url(arg.split_once('=').map_or(arg.as_str(), |(_, v)| v));
        }
    }
    for var in ["ESR_INGEST_BROKER", "ESR_INGEST_STORE", "ESR_INGEST_WEBHOOK_URL", "ESR_INGEST_SOURCE"] {
        if let Ok(url) = std::env::var(var) {
            esr_ingest::secrets::register_url(&url);
        }
    }
    for var in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
        if let Ok(key) = std::env::var(var) {
            esr_ingest::secrets::register(&key);
        }
    }
}

fn main() {
    register_secrets();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                std::process::exit(0);
            }
            // One line: clap's first line carries the reason.
            let text = e.to_string();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid arguments");
            let line = format!("esr-ingest: {} (see esr-ingest --help)", first.trim_start_matches("error: "));
            eprintln!("{}", esr_ingest::secrets::scrub(&line));
            std::process::exit(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("esr-ingest: error: cannot start the runtime: {e}");
            std::process::exit(EXIT_FAILURE);
        }
    };
    let code = match runtime.block_on(cli::execute(cli)) {
        Ok(code) => code,
        // The reader of stdout went away (`export | head`): not a failure of ours.
        Err(e) if stdout_closed(&e) => 0,
        Err(e) if e.downcast_ref::<UsageError>().is_some() => {
            eprintln!("{}", esr_ingest::secrets::scrub(&format!("esr-ingest: {e}")));
            EXIT_USAGE
        }
        Err(e) => {
            let line = format!("esr-ingest: error: {}", format!("{e:#}").replace('\n', " "));
            eprintln!("{}", esr_ingest::secrets::scrub(&line));
            EXIT_FAILURE
        }
    };
    // The MongoDB driver's clients are shut down while the runtime still runs (see there).
    runtime.block_on(esr_ingest::adapters::mongo::shut_down_clients(std::time::Duration::from_secs(2)));
    if let Some(summary) = esr_ingest::cli::fault_summary() {
        eprintln!("esr-ingest: {summary}");
    }
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    std::process::exit(code);
}
