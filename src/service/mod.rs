//! The service: `run` (long-running) and `run --once`.
//!
//! Invariant: the service owns every task it starts, all stopped by the one cancellation
//! token the signal handler holds, and waited for in one order on shutdown: the pass loop
//! first (the file in hand finishes, or is abandoned uncommitted and redone later), then
//! the health server, the S3 event listener, the alert notifier, the consumers (each
//! finishes the batch in hand), the lease keeper, and last the region leases are
//! released, so another instance takes a region over only once nothing of this one
//! writes to it any more. The embedded store's lock is held until after all of them.

mod lock;
mod once;
mod passes;
mod tasks;
pub mod wiring;

pub use once::drain;

use crate::adapters::s3_events;
use crate::config::Settings;
use crate::engine::ownership::Ownership;
use crate::engine::{PassReport, alerts};
use crate::health::{self, HealthState};
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tasks::Tasks;
use tokio_util::sync::CancellationToken;

/// The notifier is wedged when silent this long (one attempt takes at most 10 s).
const NOTIFIER_WEDGED_AFTER: Duration = Duration::from_secs(120);

/// The lease keeper renews every third of the TTL; silent for two TTLs and this, it is wedged.
const LEASE_KEEPER_SLACK: Duration = Duration::from_secs(60);

/// How the service runs.
pub enum Mode {
    /// Process everything that can be processed now, then return.
    Once,
    /// Serve health on `listen` (or the configured address) and run passes until cancelled.
    Service { listen: Option<SocketAddr> },
}

/// Runs the service until `cancel` (or, [`Mode::Once`], until everything that can be
/// processed now is).
pub async fn run(settings: Settings, mode: Mode, cancel: CancellationToken) -> anyhow::Result<()> {
    let lock = lock::lock_embedded_store(&settings)?;
    let mut engine = wiring::engine(&settings).await?;
    // A shared store (several instances may run): regions are driven under leases. The
    // embedded store is locked to this one process, so it needs none.
    let ownership = if lock.is_some() {
        None
    } else {
        let ttl = chrono::TimeDelta::from_std(settings.lease_ttl).context("lease_ttl is too large")?;
        Some(Arc::new(Ownership::new(engine.store.clone(), instance_name(), ttl)))
    };
    engine.ownership = ownership.clone();
    let mut tasks = Tasks { ownership: ownership.clone(), ..Default::default() };
    let consumers = wiring::consumers(&settings, engine.store.clone()).await?;
    let with_consumers = consumers.is_some();
    if let Some(pool) = consumers {
        tasks.consumers = pool.spawn(cancel.clone(), &engine.heartbeat);
    }
    tracing::info!(
        source = %engine.source.describe(),
        store = %engine.store.describe(),
        delivery = %engine.delivery.describe(),
        "esr-ingest starting"
    );
    let keeper_limit = settings.lease_ttl.saturating_mul(2) + LEASE_KEEPER_SLACK;
    tasks.lease_keeper = ownership
        .clone()
        .map(|o| o.spawn_keeper(engine.heartbeat.worker("lease keeper", keeper_limit), cancel.clone()));
    let listen = match mode {
        Mode::Once => {
            let done = once::run_once(&engine, &cancel, with_consumers, ownership.as_deref(), settings.lease_ttl).await;
            // The leases go whether or not everything was processed, so the next run need
            // not wait for them to expire.
            cancel.cancel();
            tasks.stop(settings.shutdown_timeout).await;
            close(&engine).await;
            drop(lock);
            return done;
        }
        Mode::Service { listen } => listen.unwrap_or(settings.health_listen),
    };
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
    if let Some(a) = &settings.alerts {
        let sink = crate::adapters::webhook::Webhook::new(&a.webhook_url).context("alerts.webhook_url")?;
        let beat = engine.heartbeat.worker("alert notifier", NOTIFIER_WEDGED_AFTER);
        tasks.notifier = Some(alerts::spawn_sender(
            engine.store.clone(),
            Arc::new(sink),
            instance_name(),
            a.give_up_after,
            beat,
            cancel.clone(),
        ));
    }
    let announced = Arc::new(s3_events::Announced::default());
    tasks.events = settings.s3_events.clone().map(|e| s3_events::spawn(e, announced.clone(), cancel.clone()));
    let served = health::serve(listen, state, cancel.clone()).await;
    match served {
        Ok(server) => tasks.server = Some(server),
        Err(e) => {
            cancel.cancel();
            tasks.stop(settings.shutdown_timeout).await;
            return Err(e.into());
        }
    }
    let rules = settings.status_rules();
    let cadence = passes::Cadence {
        interval: settings.pass_interval,
        reconcile: settings.reconcile_interval,
        announced,
        events: settings.s3_events.is_some(),
    };
    passes::run(&engine, &cadence, &rules, tasks.notifier.is_some(), &cancel).await;
    tasks.stop(settings.shutdown_timeout).await;
    close(&engine).await;
    drop(lock);
    tracing::info!("stopped");
    Ok(())
}

/// Tidies the store up for the next process (only logged when it cannot).
async fn close(engine: &crate::engine::Engine) {
    if let Err(e) = engine.store.close().await {
        tracing::warn!(error = %e, "closing the store");
    }
}

/// Counts a pass's outcomes and logs it when it did anything.
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

/// This process's name among instances: host, process id, and a value drawn at its start.
/// The last part makes every process a new owner, even one restarted with its
/// predecessor's host and process id (in a container, pid 1): it never renews a lease its
/// predecessor held, but takes it with a new token once released or expired, so a lease
/// token is only ever used by one process (the MongoDB journal orders a token's commits
/// by that process's clock).
fn instance_name() -> String {
    use rand::Rng;
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "host".into());
        let start: u32 = rand::rng().random();
        format!("{host}/{}/{start:08x}", std::process::id())
    })
    .clone()
}
