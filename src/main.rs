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

fn main() {
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
            eprintln!("esr-ingest: {} (see esr-ingest --help)", first.trim_start_matches("error: "));
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
            eprintln!("esr-ingest: {e}");
            EXIT_USAGE
        }
        Err(e) => {
            eprintln!("esr-ingest: error: {}", format!("{e:#}").replace('\n', " "));
            EXIT_FAILURE
        }
    };
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    std::process::exit(code);
}
