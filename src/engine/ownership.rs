//! Which regions this instance drives: the region leases it holds (see `core::lease`).
//!
//! Invariant: with ownership on, every commit this instance makes for a region carries
//! the token of the lease it holds for that region — or token 0, which no lease ever has,
//! when it does not hold it — so the store refuses writes for regions it does not own.
//! A lease lost to another instance is noticed by the next claim or by a refused commit,
//! and the region is left alone from then on.
//!
//! Sharing: every instance registers itself (a shared document of live instances, each
//! with an expiry renewed with its leases). An instance claims free regions only up to
//! its fair share, ⌈regions / live instances⌉, and releases what it holds beyond that at
//! the start of a pass (before it drives anything), so a new instance gets work without
//! waiting for anyone to fail.

use super::shared;
use crate::core::lease::{Fence, region_lease};
use crate::ports::store::{Store, StoreError};
use crate::telemetry::heartbeat::WorkerBeat;
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The shared document listing the live instances.
const INSTANCES_KEY: &str = "instances";

pub struct Ownership {
    store: Arc<dyn Store>,
    /// This instance's name in the leases.
    pub owner: String,
    pub ttl: TimeDelta,
    /// Lease name → token, for the leases held.
    held: Mutex<BTreeMap<String, u64>>,
    /// The leases the last claim wanted and another instance holds.
    elsewhere: Mutex<BTreeSet<String>>,
}

impl Ownership {
    pub fn new(store: Arc<dyn Store>, owner: String, ttl: TimeDelta) -> Self {
        Self { store, owner, ttl, held: Mutex::new(BTreeMap::new()), elsewhere: Mutex::new(BTreeSet::new()) }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        // A poisoned lock only means a panic elsewhere; the map itself is consistent.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Renews the leases held among `regions` (`None`: files with bad names), releases
    /// those beyond the fair share, and claims free ones up to it.
    pub async fn claim<'a>(
        &self,
        regions: impl IntoIterator<Item = Option<&'a str>>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let names: BTreeSet<String> = regions.into_iter().map(region_lease).collect();
        let live = self.register(now).await?;
        let share = names.len().div_ceil(live.max(1));
        let held: Vec<String> = self.held().keys().filter(|n| names.contains(*n)).cloned().collect();
        for name in held.iter().skip(share) {
            tracing::info!(lease = %name, share, live_instances = live, "releasing a region beyond this instance's share");
            self.store.release_lease(name, &self.owner, now).await?;
            self.held().remove(name);
        }
        let mut elsewhere = BTreeSet::new();
        for name in &names {
            let mine = self.held().contains_key(name);
            if !mine && self.held().len() >= share {
                elsewhere.insert(name.clone());
                continue;
            }
            let got = self.store.claim_lease(name, &self.owner, self.ttl, now).await?;
            if got.is_none() {
                elsewhere.insert(name.clone());
            }
            self.record(name, got.map(|l| l.token));
        }
        *self.elsewhere.lock().unwrap_or_else(PoisonError::into_inner) = elsewhere;
        crate::telemetry::metrics::regions_owned(self.held().len());
        Ok(())
    }

    /// Marks this instance alive until `now + ttl` in the shared list of instances
    /// (dropping those expired); returns how many are alive.
    async fn register(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        shared::update(self.store.as_ref(), INSTANCES_KEY, |live: &mut BTreeMap<String, i64>| {
            live.retain(|_, expires| *expires > now.timestamp_millis());
            live.insert(self.owner.clone(), (now + self.ttl).timestamp_millis());
            (true, live.len())
        })
        .await
    }

    fn record(&self, name: &str, token: Option<u64>) {
        let mut held = self.held();
        let before = held.get(name).copied();
        match token {
            Some(t) => {
                if before != Some(t) {
                    tracing::info!(lease = %name, token = t, owner = %self.owner, "lease taken");
                }
                held.insert(name.to_string(), t);
            }
            None => {
                if before.is_some() {
                    tracing::warn!(lease = %name, owner = %self.owner, "lease lost to another instance");
                }
                held.remove(name);
            }
        }
    }

    /// Renews every lease held, and this instance's registration.
    pub async fn renew(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.register(now).await?;
        let names: Vec<String> = self.held().keys().cloned().collect();
        for name in names {
            let got = self.store.claim_lease(&name, &self.owner, self.ttl, now).await?;
            self.record(&name, got.map(|l| l.token));
        }
        crate::telemetry::metrics::regions_owned(self.held().len());
        Ok(())
    }

    /// The leases the last claim wanted but left to other instances (held by them, or
    /// beyond this instance's share).
    pub fn held_elsewhere(&self) -> Vec<String> {
        self.elsewhere.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }

    /// The leases this instance holds now.
    pub fn held_leases(&self) -> Vec<String> {
        self.held().keys().cloned().collect()
    }

    /// Whether this instance drives `region` now.
    pub fn owns(&self, region: Option<&str>) -> bool {
        self.held().contains_key(&region_lease(region))
    }

    /// The fence for a commit about `region` (token 0 when not held: always refused).
    pub fn fence(&self, region: Option<&str>) -> Fence {
        let lease = region_lease(region);
        let token = self.held().get(&lease).copied().unwrap_or(0);
        Fence { lease, token }
    }

    /// Forgets a lease the store said is no longer ours.
    pub fn lost(&self, region: Option<&str>) {
        self.elsewhere.lock().unwrap_or_else(PoisonError::into_inner).insert(region_lease(region));
        self.record(&region_lease(region), None);
        crate::telemetry::metrics::regions_owned(self.held().len());
    }

    /// Lets every held lease go at once (on shutdown), so another instance takes over
    /// without waiting for them to expire.
    pub async fn release_all(&self, now: DateTime<Utc>) {
        let names: Vec<String> = std::mem::take(&mut *self.held()).into_keys().collect();
        for name in names {
            if let Err(e) = self.store.release_lease(&name, &self.owner, now).await {
                tracing::warn!(lease = %name, error = %e, "could not release a lease; it expires on its own");
            }
        }
        crate::telemetry::metrics::regions_owned(0);
        if let Err(e) = self.deregister().await {
            tracing::warn!(error = %e, "could not leave the list of instances; the entry expires on its own");
        }
    }

    /// Leaves the shared list of instances, so the others' shares grow at once.
    async fn deregister(&self) -> Result<(), StoreError> {
        shared::update(self.store.as_ref(), INSTANCES_KEY, |live: &mut BTreeMap<String, i64>| {
            (live.remove(&self.owner).is_some(), ())
        })
        .await
    }

    /// Renews the held leases every third of their lifetime until `cancel`, so a long
    /// file does not let them lapse.
    pub fn spawn_keeper(
        self: Arc<Self>,
        beat: Arc<WorkerBeat>,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let every = (self.ttl / 3).to_std().unwrap_or(Duration::from_secs(10)).max(Duration::from_millis(100));
        tokio::spawn(async move {
            loop {
                tokio::select! { () = tokio::time::sleep(every) => {}, () = cancel.cancelled() => return }
                beat.beat();
                if let Err(e) = self.renew(Utc::now()).await {
                    tracing::warn!(error = %e, "renewing leases failed; retrying");
                }
            }
        })
    }
}
