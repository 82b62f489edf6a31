//! Signals: the first SIGINT or SIGTERM cancels the one token every loop watches; the
//! process must then be gone within `shutdown_timeout`, or it exits anyway (the file in
//! hand was never committed, so it stays resumable). A second signal exits at once.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Exit code when the shutdown did not finish within `shutdown_timeout`.
pub const EXIT_SHUTDOWN_TIMEOUT: i32 = 1;
/// Exit code on a second signal.
pub const EXIT_SECOND_SIGNAL: i32 = 130;

/// Cancels `token` on the first SIGINT/SIGTERM and arms the shutdown deadline; exits at
/// once on the second.
pub fn install(token: CancellationToken, shutdown_timeout: Duration) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        for n in 0.. {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            if n == 0 {
                tracing::info!(
                    shutdown_timeout_s = shutdown_timeout.as_secs_f64(),
                    "shutdown requested: discovery stops, the file in hand finishes or is abandoned (signal again to exit at once)"
                );
                token.cancel();
                tokio::spawn(async move {
                    tokio::time::sleep(shutdown_timeout).await;
                    tracing::error!(
                        "shutdown_timeout ({:?}) passed before the shutdown finished; exiting (work not committed is redone on the next start)",
                        shutdown_timeout
                    );
                    std::process::exit(EXIT_SHUTDOWN_TIMEOUT);
                });
            } else {
                tracing::warn!("second signal: exiting now");
                std::process::exit(EXIT_SECOND_SIGNAL);
            }
        }
    });
}
