//! `run [--once]`: the service loop.

use super::{EXIT_OK, app};
use crate::adapters::s3_events;
use crate::config::{Settings, StoreSpec};
use crate::engine::ownership::Ownership;
use crate::engine::{Engine, EngineError, PassReport, alerts};
use crate::health::{self, HealthState};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn log_pass(r: &PassReport) {
    use crate::telemetry::metrics::file_processed;
    file_processed("applied", r.applied.len());
    file_processed("quarantined", r.quarantined.len());
    file_processed("duplicate", r.duplicates);
    file_processed("conflict", r.conflicts);
    file_processed("deferred", r.deferred.len());
    if r.discovered + r.applied.len() + r.quarantined.len() + r.duplicates + r.conflicts + r.deferred.len() > 0 {
        tracing::info!(
            discovered = r.discovered,
            applied = r.applied.len(),
            quarantined = r.quarantined.len(),
            duplicates = r.duplicates,
            conflicts = r.conflicts,
            deferred = r.deferred.len(),
            "pass complete"
        );
    }
}

/// Only one `run` may drive an embedded store at a time: the sequencer state is read and
/// advanced by one process. The lock is an OS file lock next to the database, released
/// when the process ends however it ends.
fn lock_embedded_store(settings: &Settings) -> anyhow::Result<Option<std::fs::File>> {
    let StoreSpec::Sqlite(db) = &settings.store else { return Ok(None) };
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("store {}", db.display()))?;
    }
    let path = PathBuf::from(format!("{}.lock", db.display()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => {
            anyhow::bail!("another esr-ingest run is already using the store {}", db.display())
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}

/// How long `--once` (and `backfill`) wait on files in flight that make no progress.
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// Waits until every file delivered to the broker is applied by the consumers; fails
/// when the in-flight files make no progress for [`STALL_LIMIT`].
pub async fn drain(engine: &Engine, cancel: &CancellationToken) -> anyhow::Result<()> {
    let (mut last, mut since) = (None, Instant::now());
    loop {
        let waiting = match engine.complete_deliveries(cancel).await {
            Err(EngineError::Cancelled) => anyhow::bail!("stopped by a shutdown request with files in flight"),
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
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            () = cancel.cancelled() => {}
        }
    }
}

/// `run --once`: one pass, then the files in flight. Regions whose lease another instance
/// holds (a process that was killed holds its leases until they expire) are waited for, up
/// to two lease lifetimes, and then named in the error: work is never left silently.
async fn run_once(
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

/// The notifier is wedged when silent this long (one attempt takes at most 10 s).
const NOTIFIER_WEDGED_AFTER: Duration = Duration::from_secs(120);

/// The lease keeper renews every third of the TTL; silent for two TTLs and this, it is wedged.
const LEASE_KEEPER_SLACK: Duration = Duration::from_secs(60);

/// Stops renewing and releases the leases, so another instance takes over at once.
async fn let_go(keeper: Option<tokio::task::JoinHandle<()>>, ownership: Option<Arc<Ownership>>) {
    if let Some(keeper) = keeper {
        let _ = keeper.await;
    }
    if let Some(o) = ownership {
        o.release_all(chrono::Utc::now()).await;
    }
}

/// This process's name among instances: host and process id.
fn instance_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!("{host}/{}", std::process::id())
}

/// How often files in flight are checked for completion between passes.
const COMPLETION_CHECK: Duration = Duration::from_millis(500);

/// Between passes, marks delivered files applied as soon as the consumers have accounted
/// for all their lines, rather than at the next pass. Returns when nothing is in flight,
/// the next pass is due, an event asks for one, or on shutdown.
async fn follow_deliveries(
    engine: &Engine,
    next_pass: tokio::time::Instant,
    wake: &tokio::sync::Notify,
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

pub async fn run(settings: Settings, once: bool, listen: Option<SocketAddr>) -> anyhow::Result<i32> {
    let lock = lock_embedded_store(&settings)?;
    let mut engine = app::engine(&settings).await?;
    // A shared store (several instances may run): regions are driven under leases. The
    // embedded store is locked to this one process, so it needs none.
    let ownership = if lock.is_some() {
        None
    } else {
        let ttl = chrono::TimeDelta::from_std(settings.lease_ttl).context("lease_ttl is too large")?;
        Some(Arc::new(Ownership::new(engine.store.clone(), instance_name(), ttl)))
    };
    engine.ownership = ownership.clone();
    let cancel = CancellationToken::new();
    super::signals::install(cancel.clone(), settings.shutdown_timeout);
    let consumers = app::consumers(&settings, engine.store.clone())
        .await?
        .map(|pool| pool.spawn(cancel.clone(), &engine.heartbeat));
    tracing::info!(
        source = %engine.source.describe(),
        store = %engine.store.describe(),
        delivery = %engine.delivery.describe(),
        "esr-ingest starting"
    );
    let keeper_limit = settings.lease_ttl.saturating_mul(2) + LEASE_KEEPER_SLACK;
    let keeper = ownership
        .clone()
        .map(|o| o.spawn_keeper(engine.heartbeat.worker("lease keeper", keeper_limit), cancel.clone()));
    if once {
        let done = run_once(&engine, &cancel, consumers.is_some(), ownership.as_deref(), settings.lease_ttl).await;
        // The leases go whether or not everything was processed, so the next run need
        // not wait for them to expire.
        cancel.cancel();
        let_go(keeper, ownership).await;
        return done.map(|()| EXIT_OK);
    }
    engine.heartbeat.beat();
    crate::telemetry::metrics::install();
    let state = HealthState {
        heartbeat: engine.heartbeat.clone(),
        store: engine.store.clone(),
        source: engine.source.clone(),
        delivery: engine.delivery.clone(),
        pass_interval: settings.pass_interval,
        rules: settings.status_rules(),
    };
    let notifier = match &settings.alerts {
        Some(a) => {
            let sink = crate::adapters::webhook::Webhook::new(&a.webhook_url).context("alerts.webhook_url")?;
            let beat = engine.heartbeat.worker("alert notifier", NOTIFIER_WEDGED_AFTER);
            Some(alerts::spawn_sender(
                engine.store.clone(),
                Arc::new(sink),
                instance_name(),
                a.give_up_after,
                beat,
                cancel.clone(),
            ))
        }
        None => None,
    };
    let status_rules = settings.status_rules();
    let wake = Arc::new(tokio::sync::Notify::new());
    let events = settings.s3_events.clone().map(|e| s3_events::spawn(e, wake.clone(), cancel.clone()));
    let server = health::serve(listen.unwrap_or(settings.health_listen), state, cancel.clone()).await?;
    while !cancel.is_cancelled() {
        let in_flight = match engine.pass(&cancel).await {
            Ok(report) => {
                log_pass(&report);
                let completed = engine.complete_deliveries(&cancel).await;
                if let Err(e) = &completed {
                    tracing::warn!(error = %e, "checking files in flight failed");
                }
                engine.heartbeat.pass_done(report.deferred.is_empty() && completed.is_ok());
                engine.check_alerts(&status_rules, notifier.is_some()).await;
                completed.map(|waiting| !waiting.is_empty()).unwrap_or(true)
            }
            Err(EngineError::Cancelled) => break,
            Err(e) => {
                tracing::error!(error = %e, "pass failed; trying again after the poll interval");
                engine.heartbeat.pass_done(false);
                false
            }
        };
        let next_pass = tokio::time::Instant::now() + settings.pass_interval;
        if in_flight {
            follow_deliveries(&engine, next_pass, &wake, &cancel).await;
        }
        tokio::select! {
            () = tokio::time::sleep_until(next_pass) => {}
            () = wake.notified() => {}
            () = cancel.cancelled() => {}
        }
    }
    let _ = server.await;
    if let Some(events) = events {
        let _ = events.await;
    }
    if let Some(notifier) = notifier {
        let _ = notifier.await;
    }
    for consumer in consumers.into_iter().flatten() {
        let _ = consumer.await;
    }
    let_go(keeper, ownership).await;
    drop(lock);
    tracing::info!("stopped");
    Ok(EXIT_OK)
}
