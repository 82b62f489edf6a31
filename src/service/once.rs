//! `run --once` and draining the files in flight.

use super::log_pass;
use crate::engine::ownership::Ownership;
use crate::engine::{Engine, EngineError};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long `--once` (and `backfill`) wait on files in flight that make no progress.
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// The pause between checks of the files in flight while draining: the last check ends
/// the command, so a longer pause adds to every run's time. A check reads each file's
/// receipts; one that takes longer than this is followed by a pause as long as it took,
/// so checking never takes more than half of the store's time.
const DRAIN_CHECK: Duration = Duration::from_millis(20);

/// The error of a drain that a shutdown request ends.
const STOPPED: &str = "stopped by a shutdown request with files in flight";

/// Waits until every file delivered to the broker is applied by the consumers; fails
/// when the in-flight files make no progress for `STALL_LIMIT` (60 s).
pub async fn drain(engine: &Engine, cancel: &CancellationToken) -> anyhow::Result<()> {
    let (mut last, mut since) = (None, Instant::now());
    loop {
        let checked = Instant::now();
        let waiting = match engine.complete_deliveries(cancel).await {
            Err(EngineError::Cancelled) => anyhow::bail!(STOPPED),
            other => other?,
        };
        let Some(first) = waiting.first() else { return Ok(()) };
        let moved: u64 = waiting.iter().map(|f| f.applied + f.stale + f.unchanged + f.dead_lettered).sum();
        if last != Some(moved) {
            (last, since) = (Some(moved), Instant::now());
        } else if since.elapsed() > STALL_LIMIT {
            anyhow::bail!(
                "{} file(s) still in flight after {}s without progress; first: {} ({} of {} record lines accounted for); see `status` and `dlq list`",
                waiting.len(),
                STALL_LIMIT.as_secs(),
                first.file,
                first.applied + first.stale + first.unchanged + first.dead_lettered + first.rejected,
                first.record_lines
            );
        }
        tokio::select! {
            () = tokio::time::sleep(DRAIN_CHECK.max(checked.elapsed())) => {}
            () = cancel.cancelled() => anyhow::bail!(STOPPED),
        }
    }
}

/// One pass, then the files in flight. Regions whose lease another instance holds (a
/// process that was killed holds its leases until they expire) are waited for, up to two
/// lease lifetimes, and then named in the error: work is never left silently.
pub(super) async fn run_once(
    engine: &Engine,
    cancel: &CancellationToken,
    with_consumers: bool,
    ownership: Option<&Ownership>,
    lease_ttl: Duration,
) -> anyhow::Result<()> {
    // Counted from when a held region is first seen, not from the start of the run.
    let mut deadline: Option<Instant> = None;
    loop {
        let report = match engine.pass(cancel).await {
            Err(EngineError::Cancelled) => {
                anyhow::bail!("stopped by a shutdown request before everything was processed")
            }
            other => other?,
        };
        log_pass(&report);
        if !report.deferred.is_empty() {
            let (file, why) = &report.deferred[0];
            anyhow::bail!("{} file(s) could not be processed now; first: {file}: {why}", report.deferred.len());
        }
        if with_consumers {
            drain(engine, cancel).await?;
        }
        let elsewhere = ownership.map(Ownership::held_elsewhere).unwrap_or_default();
        if elsewhere.is_empty() {
            return Ok(());
        }
        let deadline =
            *deadline.get_or_insert_with(|| Instant::now() + lease_ttl.saturating_mul(2) + Duration::from_secs(2));
        if Instant::now() > deadline {
            anyhow::bail!(
                "region lease(s) {} held by another instance for longer than two lease lifetimes; their files were left to it",
                elsewhere.join(", ")
            );
        }
        tracing::info!(leases = %elsewhere.join(", "), "waiting for regions held by another instance");
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = cancel.cancelled() => anyhow::bail!("stopped by a shutdown request before everything was processed"),
        }
    }
}
