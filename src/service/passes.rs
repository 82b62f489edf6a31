//! The service's pass loop: a pass, the alert check, then files in flight followed until
//! the next pass is due.

use super::log_pass;
use crate::engine::status::StatusRules;
use crate::engine::{Engine, EngineError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often files in flight are checked for completion between passes.
const COMPLETION_CHECK: Duration = Duration::from_millis(500);

/// Runs passes every `interval` (or when `wake` is notified) until `cancel`.
pub(super) async fn run(
    engine: &Engine,
    interval: Duration,
    rules: &StatusRules,
    notify: bool,
    wake: &Notify,
    cancel: &CancellationToken,
) {
    while !cancel.is_cancelled() {
        let in_flight = match engine.pass(cancel).await {
            Ok(report) => {
                log_pass(&report);
                let completed = engine.complete_deliveries(cancel).await;
                if let Err(e) = &completed {
                    tracing::warn!(error = %e, "checking files in flight failed");
                }
                engine.heartbeat.pass_done(report.deferred.is_empty() && completed.is_ok());
                engine.check_alerts(rules, notify).await;
                completed.map(|waiting| !waiting.is_empty()).unwrap_or(true)
            }
            Err(EngineError::Cancelled) => break,
            Err(e) => {
                tracing::error!(error = %e, "pass failed; trying again after the poll interval");
                engine.heartbeat.pass_done(false);
                false
            }
        };
        let next_pass = tokio::time::Instant::now() + interval;
        if in_flight {
            follow_deliveries(engine, next_pass, wake, cancel).await;
        }
        tokio::select! {
            () = tokio::time::sleep_until(next_pass) => {}
            () = wake.notified() => {}
            () = cancel.cancelled() => {}
        }
    }
}

/// Between passes, marks delivered files applied as soon as the consumers have accounted
/// for all their lines, rather than at the next pass. Returns when nothing is in flight,
/// the next pass is due, an event asks for one, or on shutdown.
async fn follow_deliveries(
    engine: &Engine,
    next_pass: tokio::time::Instant,
    wake: &Notify,
    cancel: &CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(COMPLETION_CHECK) => {}
            () = tokio::time::sleep_until(next_pass) => return,
            () = wake.notified() => {
                wake.notify_one(); // keep the request for the caller's wait
                return;
            }
            () = cancel.cancelled() => return,
        }
        match engine.complete_deliveries(cancel).await {
            Ok(waiting) if waiting.is_empty() => return,
            Ok(_) => {}
            Err(EngineError::Cancelled) => return,
            Err(e) => tracing::warn!(error = %e, "checking files in flight failed"),
        }
    }
}
