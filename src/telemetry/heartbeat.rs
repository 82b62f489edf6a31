//! Liveness: when discovery last completed a pass, and when each long-running worker last
//! turned its loop. The health server reads these; a scheduler or worker that silently
//! stops turns `/healthz` red.

use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Last-progress timestamps that the health server reads: discovery's own, and one per
/// long-running worker (consumers, listeners, the notifier), each with the longest
/// silence that is still healthy for it.
#[derive(Default)]
pub struct Heartbeat {
    last_beat_ms: AtomicI64,
    last_pass_ms: AtomicI64,
    last_pass_ok: std::sync::atomic::AtomicBool,
    workers: std::sync::Mutex<Vec<Arc<WorkerBeat>>>,
}

/// A worker's heartbeat; the worker calls [`WorkerBeat::beat`] on every turn of its loop,
/// idle or not.
pub struct WorkerBeat {
    pub name: String,
    pub limit: std::time::Duration,
    last_ms: AtomicI64,
}

impl WorkerBeat {
    pub fn beat(&self) {
        self.last_ms.store(Utc::now().timestamp_millis(), Ordering::Relaxed);
    }
    /// Whether the worker has been silent for longer than its limit at `now`.
    pub fn wedged(&self, now: DateTime<Utc>) -> bool {
        let silent = now.timestamp_millis() - self.last_ms.load(Ordering::Relaxed);
        silent > i64::try_from(self.limit.as_millis()).unwrap_or(i64::MAX)
    }
}

impl Heartbeat {
    /// Registers a worker, counted as alive from now.
    pub fn worker(&self, name: &str, limit: std::time::Duration) -> Arc<WorkerBeat> {
        let beat = Arc::new(WorkerBeat { name: name.to_string(), limit, last_ms: AtomicI64::new(0) });
        beat.beat();
        self.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(beat.clone());
        beat
    }
    /// The names of the workers silent for longer than their limit.
    pub fn wedged_workers(&self, now: DateTime<Utc>) -> Vec<String> {
        let workers = self.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        workers.iter().filter(|w| w.wedged(now)).map(|w| w.name.clone()).collect()
    }

    pub fn beat(&self) {
        self.last_beat_ms.store(Utc::now().timestamp_millis(), Ordering::Relaxed);
    }
    pub fn pass_done(&self, ok: bool) {
        crate::telemetry::metrics::pass_finished(ok, Utc::now());
        self.beat();
        self.last_pass_ms.store(Utc::now().timestamp_millis(), Ordering::Relaxed);
        self.last_pass_ok.store(ok, Ordering::Relaxed);
    }
    pub fn last_beat(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_millis(self.last_beat_ms.load(Ordering::Relaxed)).filter(|t| t.timestamp() > 0)
    }
    pub fn last_pass(&self) -> Option<(DateTime<Utc>, bool)> {
        let t =
            DateTime::from_timestamp_millis(self.last_pass_ms.load(Ordering::Relaxed)).filter(|t| t.timestamp() > 0)?;
        Some((t, self.last_pass_ok.load(Ordering::Relaxed)))
    }
}
