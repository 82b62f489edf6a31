//! Fault-injecting wrappers around the ports, for tests: each wraps a real implementation
//! and, on a seeded random draw per call, makes the call
//! - **fail before** it takes effect (a transient error, nothing happened),
//! - **fail after** it took effect, with the reply lost (the ambiguous case: the caller
//!   sees a transient error although the write is durable),
//! - **delay** (up to 50 ms), or
//! - **pause** the caller for a set time before the call (past a lease, say).
//!
//! They are switched on by `ESR_INGEST_FAULTS` (see [`FaultPlan::from_env`]) and are inert
//! otherwise. Invariants the test suites check through them: no record lost, no stale
//! overwrite, counters exact, and a stream's position or a ledger entry never moves back.

use crate::core::full::{Sweep, Swept};
use crate::core::lease::Lease;
use crate::core::ledger::{FileState, LedgerEntry, Listed};
use crate::core::record::{Record, Reject, Tally};
use crate::ports::delivery::{Delivery, DeliveryError, DeliveryProbe, FileDelivery};
use crate::ports::source::{ObjectReader, ObjectSource, SettledNames, SourceError};
use crate::ports::store::{
    AuditEntry, Commit, Counts, DeadLetter, DeliveredBatch, FileTicket, FileTxn, KnownName, RegionHistory, Shared,
    Snapshot, Store, StoreError, StoredRecord,
};
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use rand::{Rng, SeedableRng};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;

/// What an injected fault does to one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    FailBefore,
    FailAfter,
    Delay,
    Pause,
}

impl FaultKind {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "before" => FaultKind::FailBefore,
            "after" => FaultKind::FailAfter,
            "delay" => FaultKind::Delay,
            "pause" => FaultKind::Pause,
            _ => return None,
        })
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The seeded schedule of faults shared by the wrappers of one process.
pub struct FaultPlan {
    rng: Mutex<rand_chacha::ChaCha8Rng>,
    /// Chance of a fault per call.
    rate: f64,
    kinds: Vec<FaultKind>,
    pause: Duration,
    /// Faults injected so far, by kind.
    injected: [AtomicU64; 4],
}

impl FaultPlan {
    pub fn new(seed: u64, rate: f64, kinds: Vec<FaultKind>, pause: Duration) -> Self {
        Self {
            rng: Mutex::new(rand_chacha::ChaCha8Rng::seed_from_u64(seed)),
            rate,
            kinds,
            pause,
            injected: Default::default(),
        }
    }

    /// `ESR_INGEST_FAULTS="seed=7,rate=0.05,kinds=before+after+delay+pause,pause_ms=3000"`;
    /// `None` when unset. A malformed value is an error (a test would otherwise run
    /// without the faults it asked for).
    pub fn from_env() -> Result<Option<Arc<Self>>, String> {
        let Ok(spec) = std::env::var("ESR_INGEST_FAULTS") else { return Ok(None) };
        let (mut seed, mut rate, mut kinds, mut pause) = (0u64, 0.05f64, vec![FaultKind::FailBefore], 0u64);
        for part in spec.split(',').filter(|p| !p.is_empty()) {
            let bad = || format!("ESR_INGEST_FAULTS: cannot read {part:?}");
            let (key, value) = part.split_once('=').ok_or_else(bad)?;
            match key {
                "seed" => seed = value.parse().map_err(|_| bad())?,
                "rate" => rate = value.parse().map_err(|_| bad())?,
                "pause_ms" => pause = value.parse().map_err(|_| bad())?,
                "kinds" => {
                    kinds = value.split('+').map(|k| FaultKind::parse(k).ok_or_else(bad)).collect::<Result<_, _>>()?
                }
                _ => return Err(bad()),
            }
        }
        if !(0.0..=1.0).contains(&rate) || kinds.is_empty() {
            return Err("ESR_INGEST_FAULTS: rate must be within 0..=1 and kinds not empty".into());
        }
        Ok(Some(Arc::new(Self::new(seed, rate, kinds, Duration::from_millis(pause)))))
    }

    /// The fault for one call, if any.
    pub fn draw(&self) -> Option<FaultKind> {
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        if self.kinds.is_empty() || !rng.random_bool(self.rate) {
            return None;
        }
        let kind = self.kinds[rng.random_range(0..self.kinds.len())];
        self.injected[kind.index()].fetch_add(1, Ordering::Relaxed);
        Some(kind)
    }

    fn delay(&self) -> Duration {
        Duration::from_millis(self.rng.lock().unwrap_or_else(PoisonError::into_inner).random_range(0..50))
    }

    /// Faults injected so far: (before, after, delay, pause).
    pub fn injected(&self) -> [u64; 4] {
        [0, 1, 2, 3].map(|i| self.injected[i].load(Ordering::Relaxed))
    }

    /// Runs `call` under the drawn fault; `fail` builds the injected error.
    async fn around<T, E, Fut>(&self, op: &str, fail: impl Fn(String) -> E, call: impl FnOnce() -> Fut) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        match self.draw() {
            None => call().await,
            Some(FaultKind::FailBefore) => {
                tracing::debug!(op, "injected fault: fails before it takes effect");
                Err(fail(format!("injected fault: {op} failed before it took effect")))
            }
            Some(FaultKind::FailAfter) => {
                call().await?;
                tracing::debug!(op, "injected fault: took effect, reply lost");
                Err(fail(format!("injected fault: {op} took effect but its reply was lost")))
            }
            Some(FaultKind::Delay) => {
                tokio::time::sleep(self.delay()).await;
                call().await
            }
            Some(FaultKind::Pause) => {
                tracing::debug!(op, pause = ?self.pause, "injected fault: caller paused");
                tokio::time::sleep(self.pause).await;
                call().await
            }
        }
    }
}

fn store_fault(detail: String) -> StoreError {
    StoreError::Io(detail)
}

fn delivery_fault(detail: String) -> DeliveryError {
    DeliveryError::Unavailable(detail)
}

/// A [`Store`] with injected faults.
pub struct UnreliableStore {
    pub inner: Arc<dyn Store>,
    pub plan: Arc<FaultPlan>,
}

#[async_trait]
impl Store for UnreliableStore {
    fn describe(&self) -> String {
        format!("{} (with injected faults)", self.inner.describe())
    }
    fn atomic_files(&self) -> bool {
        self.inner.atomic_files()
    }
    fn group_lines(&self) -> u64 {
        self.inner.group_lines()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.plan.around("ping", store_fault, || self.inner.ping()).await
    }
    async fn close(&self) -> Result<(), StoreError> {
        self.inner.close().await
    }
    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.plan.around("snapshot", store_fault, || self.inner.snapshot()).await
    }
    async fn active(&self) -> Result<Snapshot, StoreError> {
        self.plan.around("active", store_fault, || self.inner.active()).await
    }
    async fn known_names(&self) -> Result<Vec<KnownName>, StoreError> {
        self.plan.around("known_names", store_fault, || self.inner.known_names()).await
    }
    async fn ledger_lookup(
        &self,
        names: Vec<String>,
        positions: Vec<(String, u64)>,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        self.plan.around("ledger_lookup", store_fault, || self.inner.ledger_lookup(names, positions)).await
    }
    async fn region_history(&self, since: DateTime<Utc>) -> Result<Vec<RegionHistory>, StoreError> {
        self.plan.around("region_history", store_fault, || self.inner.region_history(since)).await
    }
    async fn recent_audit(&self, n: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.plan.around("recent_audit", store_fault, || self.inner.recent_audit(n)).await
    }
    async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        self.plan.around("commit", store_fault, || self.inner.commit(commit)).await
    }
    async fn begin_file(&self, ticket: FileTicket) -> Result<Box<dyn FileTxn>, StoreError> {
        let txn = self.plan.around("begin_file", store_fault, || self.inner.begin_file(ticket)).await?;
        Ok(Box::new(UnreliableTxn { inner: txn, plan: self.plan.clone() }))
    }
    async fn counts(&self) -> Result<Counts, StoreError> {
        self.plan.around("counts", store_fault, || self.inner.counts()).await
    }
    async fn rejects(&self, file: Option<String>) -> Result<Vec<Reject>, StoreError> {
        self.plan.around("rejects", store_fault, || self.inner.rejects(file)).await
    }
    async fn audit_log(&self) -> Result<Vec<AuditEntry>, StoreError> {
        self.plan.around("audit_log", store_fault, || self.inner.audit_log()).await
    }
    async fn export(&self, sink: mpsc::Sender<Vec<StoredRecord>>) -> Result<u64, StoreError> {
        self.plan.around("export", store_fault, || self.inner.export(sink)).await
    }
    async fn apply_delivered(&self, batches: Vec<DeliveredBatch>) -> Result<Vec<Option<Tally>>, StoreError> {
        self.plan.around("apply_delivered", store_fault, || self.inner.apply_delivered(batches)).await
    }
    async fn keep_rejects(&self, batch: Vec<Reject>) -> Result<(), StoreError> {
        self.plan.around("keep_rejects", store_fault, || self.inner.keep_rejects(batch)).await
    }
    async fn mark_dead_lettered(&self, marks: Vec<DeadLetter>) -> Result<(), StoreError> {
        self.plan.around("mark_dead_lettered", store_fault, || self.inner.mark_dead_lettered(marks)).await
    }
    async fn delivery_progress(&self, file: &str, generation: u32) -> Result<Tally, StoreError> {
        self.plan.around("delivery_progress", store_fault, || self.inner.delivery_progress(file, generation)).await
    }
    async fn read_shared(&self, key: &str) -> Result<Option<Shared>, StoreError> {
        self.plan.around("read_shared", store_fault, || self.inner.read_shared(key)).await
    }
    async fn write_shared(&self, key: &str, expected: Option<u64>, value: String) -> Result<Option<u64>, StoreError> {
        self.plan.around("write_shared", store_fault, || self.inner.write_shared(key, expected, value)).await
    }
    async fn claim_lease(
        &self,
        name: &str,
        owner: &str,
        ttl: TimeDelta,
        now: DateTime<Utc>,
    ) -> Result<Option<Lease>, StoreError> {
        self.plan.around("claim_lease", store_fault, || self.inner.claim_lease(name, owner, ttl, now)).await
    }
    async fn release_lease(&self, name: &str, owner: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.plan.around("release_lease", store_fault, || self.inner.release_lease(name, owner, now)).await
    }
    async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        self.plan.around("leases", store_fault, || self.inner.leases()).await
    }
    async fn files_in_state(&self, state: FileState) -> Result<Vec<LedgerEntry>, StoreError> {
        self.plan.around("files_in_state", store_fault, || self.inner.files_in_state(state)).await
    }
    async fn sweep(&self, sweep: &Sweep) -> Result<Swept, StoreError> {
        self.plan.around("sweep", store_fault, || self.inner.sweep(sweep)).await
    }
}

struct UnreliableTxn {
    inner: Box<dyn FileTxn>,
    plan: Arc<FaultPlan>,
}

#[async_trait]
impl FileTxn for UnreliableTxn {
    async fn apply(&mut self, batch: Vec<Record>) -> Result<(), StoreError> {
        let inner = &mut self.inner;
        self.plan.around("file apply", store_fault, || inner.apply(batch)).await
    }
    async fn reject(&mut self, batch: Vec<Reject>) -> Result<(), StoreError> {
        let inner = &mut self.inner;
        self.plan.around("file reject", store_fault, || inner.reject(batch)).await
    }
    async fn settle(&mut self) -> Result<Tally, StoreError> {
        let inner = &mut self.inner;
        self.plan.around("file settle", store_fault, || inner.settle()).await
    }
    async fn sweep(&mut self, sweep: &Sweep) -> Result<Swept, StoreError> {
        let inner = &mut self.inner;
        self.plan.around("file sweep", store_fault, || inner.sweep(sweep)).await
    }
    async fn commit(self: Box<Self>, commit: Commit) -> Result<(), StoreError> {
        let UnreliableTxn { inner, plan } = *self;
        plan.around("file commit", store_fault, || inner.commit(commit)).await
    }
    async fn next_file(&mut self, ticket: FileTicket) -> Result<(), StoreError> {
        let inner = &mut self.inner;
        self.plan.around("file next", store_fault, || inner.next_file(ticket)).await
    }
}

/// A [`Delivery`] with injected faults.
pub struct UnreliableDelivery {
    pub inner: Arc<dyn Delivery>,
    pub plan: Arc<FaultPlan>,
}

#[async_trait]
impl Delivery for UnreliableDelivery {
    fn describe(&self) -> String {
        format!("{} (with injected faults)", self.inner.describe())
    }
    fn asynchronous(&self) -> bool {
        self.inner.asynchronous()
    }
    async fn open(&self, ticket: FileTicket) -> Result<Box<dyn FileDelivery>, DeliveryError> {
        let inner = self.plan.around("delivery open", delivery_fault, || self.inner.open(ticket)).await?;
        Ok(Box::new(UnreliableFileDelivery { inner, plan: self.plan.clone() }))
    }
    fn group_lines(&self) -> u64 {
        self.inner.group_lines()
    }
    async fn probe(&self) -> Result<DeliveryProbe, DeliveryError> {
        self.plan.around("delivery probe", delivery_fault, || self.inner.probe()).await
    }
}

struct UnreliableFileDelivery {
    inner: Box<dyn FileDelivery>,
    plan: Arc<FaultPlan>,
}

#[async_trait]
impl FileDelivery for UnreliableFileDelivery {
    async fn send(&mut self, batch: Vec<Record>) -> Result<(), DeliveryError> {
        let inner = &mut self.inner;
        self.plan.around("delivery send", delivery_fault, || inner.send(batch)).await
    }
    async fn reject(&mut self, batch: Vec<Reject>) -> Result<(), DeliveryError> {
        let inner = &mut self.inner;
        self.plan.around("delivery reject", delivery_fault, || inner.reject(batch)).await
    }
    async fn settle(&mut self) -> Result<Tally, DeliveryError> {
        let inner = &mut self.inner;
        self.plan.around("delivery settle", delivery_fault, || inner.settle()).await
    }
    async fn sweep(&mut self, sweep: &Sweep) -> Result<Option<Swept>, DeliveryError> {
        let inner = &mut self.inner;
        self.plan.around("delivery sweep", delivery_fault, || inner.sweep(sweep)).await
    }
    async fn commit(self: Box<Self>, commit: Commit) -> Result<(), DeliveryError> {
        let UnreliableFileDelivery { inner, plan } = *self;
        plan.around("delivery commit", delivery_fault, || inner.commit(commit)).await
    }
    async fn next_file(&mut self, ticket: FileTicket) -> Result<(), DeliveryError> {
        let inner = &mut self.inner;
        self.plan.around("delivery next file", delivery_fault, || inner.next_file(ticket)).await
    }
}

/// An [`ObjectSource`] with injected faults: listings and opens fail or stall; a read
/// never has an effect to lose.
pub struct UnreliableSource {
    pub inner: Arc<dyn ObjectSource>,
    pub plan: Arc<FaultPlan>,
}

fn source_fault(detail: String) -> SourceError {
    SourceError::Unavailable { location: "injected".into(), detail }
}

#[async_trait]
impl ObjectSource for UnreliableSource {
    fn describe(&self) -> String {
        format!("{} (with injected faults)", self.inner.describe())
    }
    async fn list(&self) -> Result<Vec<Listed>, SourceError> {
        self.plan.around("list", source_fault, || self.inner.list()).await
    }
    async fn list_quick(&self, settled: SettledNames) -> Result<Vec<Listed>, SourceError> {
        self.plan.around("list", source_fault, || self.inner.list_quick(settled.clone())).await
    }
    async fn list_keys(&self, keys: &[String]) -> Result<Vec<Listed>, SourceError> {
        self.plan.around("list", source_fault, || self.inner.list_keys(keys)).await
    }
    async fn ping(&self) -> Result<(), SourceError> {
        self.plan.around("source ping", source_fault, || self.inner.ping()).await
    }
    async fn open(&self, object: &Listed) -> Result<ObjectReader, SourceError> {
        self.plan.around("open", source_fault, || self.inner.open(object)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_read_from_the_environment_form() {
        let plan = FaultPlan::new(7, 1.0, vec![FaultKind::FailAfter], Duration::ZERO);
        assert_eq!(plan.draw(), Some(FaultKind::FailAfter));
        assert_eq!(plan.injected(), [0, 1, 0, 0]);
        let never = FaultPlan::new(7, 0.0, vec![FaultKind::FailBefore], Duration::ZERO);
        assert!((0..100).all(|_| never.draw().is_none()));
    }

    #[tokio::test]
    async fn fail_after_takes_effect_and_loses_the_reply() {
        let plan = FaultPlan::new(1, 1.0, vec![FaultKind::FailAfter], Duration::ZERO);
        let effect = AtomicU64::new(0);
        let result: Result<(), StoreError> = plan
            .around("op", store_fault, || async {
                effect.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .await;
        assert!(result.is_err_and(|e| e.is_transient()));
        assert_eq!(effect.load(Ordering::SeqCst), 1);
        let plan = FaultPlan::new(1, 1.0, vec![FaultKind::FailBefore], Duration::ZERO);
        let result: Result<(), StoreError> = plan
            .around("op", store_fault, || async {
                effect.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .await;
        assert!(result.is_err());
        assert_eq!(effect.load(Ordering::SeqCst), 1, "nothing happened");
    }
}
