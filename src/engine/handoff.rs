//! Keys announced to an instance that does not drive their region, handed to the one that
//! does.
//!
//! With several instances on one store, they all consume the same queue of S3 event
//! notifications, so a key often reaches an instance that does not hold its region's
//! lease. That instance does not look at the object; it adds the key to a shared document
//! ([`HANDED_OFF`]), and every instance takes from it, between passes, the keys of the
//! regions it holds ([`Engine::take_handed_off`]): an announced file starts within one
//! check, whichever instance heard of it, instead of waiting for the owner's next full
//! listing.
//!
//! Invariants:
//! - Bounded: at most [`HANDED_OFF_AT_MOST`] keys wait. A region whose keys did not fit is
//!   marked instead, and its owner makes a full pass.
//! - A hint, like the notification it comes from: a key lost here (an instance stopped
//!   before handing it off, a write that failed) is found by the owner's next full
//!   listing, every `reconcile_interval`.

use super::{Engine, shared};
use crate::core::lease::region_lease;
use crate::ports::store::StoreError;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The shared document of keys handed off.
pub const HANDED_OFF: &str = "handed-off-keys";

/// How many keys wait in [`HANDED_OFF`] at most.
pub const HANDED_OFF_AT_MOST: usize = 1_000;

/// The shared document: keys by region lease, and the leases whose keys did not fit.
#[derive(Debug, Default, Serialize, Deserialize)]
struct HandedOff {
    #[serde(default)]
    keys: BTreeMap<String, BTreeSet<String>>,
    #[serde(default)]
    overflow: BTreeSet<String>,
}

impl HandedOff {
    fn len(&self) -> usize {
        self.keys.values().map(BTreeSet::len).sum()
    }

    /// Adds `key` for `lease`, or marks the lease for a full pass when the keys are at
    /// their bound.
    fn add(&mut self, lease: String, key: String) {
        if self.overflow.contains(&lease) {
            return;
        }
        if self.len() >= HANDED_OFF_AT_MOST {
            self.too_many(lease);
        } else {
            self.keys.entry(lease).or_default().insert(key);
        }
    }

    /// Marks `lease` for a full pass in place of its keys.
    fn too_many(&mut self, lease: String) {
        self.keys.remove(&lease);
        self.overflow.insert(lease);
    }
}

/// Keys heard of through notifications: none, these, or more than one look-up each is
/// worth (a full pass finds them). What [`Engine::take_handed_off`] found for this
/// instance's regions, and what a full pass of the service took in place of looking each
/// key up (the keys of other instances' regions are then handed to them).
#[derive(Debug, PartialEq, Eq)]
pub enum Announcement {
    Nothing,
    /// Keys to look up, as if announced here.
    Keys(Vec<String>),
    /// More keys than fitted or than one look-up each is worth.
    Everything,
}

impl Engine {
    /// Hands the `keys` of regions this instance does not drive to the instances that do
    /// (nothing without leases).
    pub async fn hand_off_unowned(&self, keys: &[String]) -> Result<(), StoreError> {
        let Some(ownership) = &self.ownership else { return Ok(()) };
        let elsewhere: Vec<(String, String)> = keys
            .iter()
            .map(|key| (self.region_of_key(key), key))
            .filter(|(region, _)| !ownership.owns(region.as_deref()))
            .map(|(region, key)| (region_lease(region.as_deref()), key.clone()))
            .collect();
        if elsewhere.is_empty() {
            return Ok(());
        }
        shared::update(self.store.as_ref(), HANDED_OFF, |doc: &mut HandedOff| {
            elsewhere.iter().for_each(|(lease, key)| doc.add(lease.clone(), key.clone()));
            (true, ())
        })
        .await
    }

    /// Asks a full pass of every instance driving regions this one left to it (more keys
    /// were announced here than one look-up each is worth).
    pub async fn hand_off_everything_elsewhere(&self) -> Result<(), StoreError> {
        let Some(ownership) = &self.ownership else { return Ok(()) };
        let leases = ownership.held_elsewhere();
        if leases.is_empty() {
            return Ok(());
        }
        shared::update(self.store.as_ref(), HANDED_OFF, |doc: &mut HandedOff| {
            leases.iter().for_each(|lease| doc.too_many(lease.clone()));
            (true, ())
        })
        .await
    }

    /// Takes the keys handed off for the regions this instance holds (nothing without
    /// leases). Writes only when there is something to take.
    pub async fn take_handed_off(&self) -> Result<Announcement, StoreError> {
        let Some(ownership) = &self.ownership else { return Ok(Announcement::Nothing) };
        let held = ownership.held_leases();
        shared::update(self.store.as_ref(), HANDED_OFF, |doc: &mut HandedOff| {
            let mut keys = Vec::new();
            let mut everything = false;
            for lease in &held {
                everything |= doc.overflow.remove(lease);
                keys.extend(doc.keys.remove(lease).unwrap_or_default());
            }
            let taken = match (everything, keys.is_empty()) {
                (true, _) => Announcement::Everything,
                (false, true) => Announcement::Nothing,
                (false, false) => Announcement::Keys(keys),
            };
            (taken != Announcement::Nothing, taken)
        })
        .await
    }
}
