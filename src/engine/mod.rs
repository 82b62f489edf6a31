//! The engine: discovery passes over the ports, driven by the pure core.
//!
//! A pass lists the whole source, reconciles it with the ledger, rebuilds every stream from
//! the store, and applies what each stream's sequencer allows. All state lives in the
//! store, so a pass can be interrupted at any point (a crash, a signal) and the next pass
//! carries on from what was committed.

pub mod alerts;
pub mod audit;
mod backfill;
mod broker_unit;
pub mod completion;
mod discovery;
mod door;
mod export;
mod group;
pub mod handoff;
mod known;
pub mod ownership;
mod pass;
mod process;
mod retry;
pub mod shared;
mod skip;
pub mod status;
pub mod streams;

pub use crate::telemetry::heartbeat::{Heartbeat, WorkerBeat};
pub use backfill::{BackfillFile, BackfillPlan, BackfillReport};
pub use discovery::{KEYS_AT_MOST, Scope};
pub use export::export_line;
pub use known::KnownNames;
pub use process::FileOutcome;
pub use skip::Skipped;

use crate::core::name::NameProfile;
use crate::core::schema::Layouts;
use crate::core::sequencer::SequenceRules;
use crate::ports::delivery::{Delivery, DeliveryError};
use crate::ports::source::{ObjectSource, SourceError};
use crate::ports::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error("stopped by a shutdown request")]
    Cancelled,
    #[error("{0}")]
    Operator(String),
    /// The request itself is wrong (exit code 2 at the command line).
    #[error("{0}")]
    Usage(String),
}

impl EngineError {
    /// The retry metric's label for this error.
    pub fn retry_cause(&self) -> crate::ports::RetryCause {
        use crate::ports::RetryCause;
        match self {
            EngineError::Store(e) | EngineError::Delivery(DeliveryError::Store(e)) => e.retry_cause(),
            EngineError::Source(_) => RetryCause::SourceUnavailable,
            EngineError::Delivery(_) => RetryCause::BrokerUnavailable,
            EngineError::Cancelled | EngineError::Operator(_) | EngineError::Usage(_) => RetryCause::Other,
        }
    }

    /// A write refused because another instance holds the region's lease now.
    pub fn is_fenced(&self) -> bool {
        matches!(
            self,
            EngineError::Store(StoreError::Fenced(_))
                | EngineError::Delivery(DeliveryError::Store(StoreError::Fenced(_)))
        )
    }

    /// A write refused because another writer changed what it was built from (a file
    /// counted meanwhile): nothing was written; the next pass plans it again.
    pub fn is_superseded(&self) -> bool {
        matches!(
            self,
            EngineError::Store(StoreError::Superseded(_))
                | EngineError::Delivery(DeliveryError::Store(StoreError::Superseded(_)))
        )
    }

    pub fn is_transient(&self) -> bool {
        match self {
            EngineError::Source(e) => e.is_transient(),
            EngineError::Store(e) => e.is_transient(),
            EngineError::Delivery(e) => e.is_transient(),
            EngineError::Cancelled => false,
            EngineError::Operator(_) | EngineError::Usage(_) => false,
        }
    }
}

/// The time source (replaceable in tests).
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// What one pass did.
#[derive(Clone, Debug, Default)]
pub struct PassReport {
    pub discovered: usize,
    pub duplicates: usize,
    pub conflicts: usize,
    pub applied: Vec<String>,
    pub quarantined: Vec<String>,
    /// Files left for a later pass because of a transient error, with the error.
    pub deferred: Vec<(String, String)>,
    /// A pass over notified keys found a region with no baseline yet, or a stream due
    /// for its automatic skip: only a pass that saw every name may decide either (see
    /// `Scope::Keys`).
    pub needs_full_listing: bool,
    /// The pass listed and checked every object against the known names read from the
    /// store, as the reconcile does: a full pass, or a pass over more notified keys than
    /// are worth looking up one by one.
    pub listed_everything: bool,
}

/// Everything a pass needs.
pub struct Engine {
    pub source: Arc<dyn ObjectSource>,
    pub store: Arc<dyn Store>,
    pub delivery: Arc<dyn Delivery>,
    pub profile: NameProfile,
    /// The record layouts, per file kind.
    pub layouts: Layouts,
    /// Which file kinds are full files (`core::full`).
    pub full_files: crate::core::full::FullFileKinds,
    pub rules: SequenceRules,
    pub clock: Arc<dyn Clock>,
    pub heartbeat: Arc<Heartbeat>,
    /// The region leases, when several instances may share the store (`run`); `None`
    /// drives every region unfenced (backfill, tests).
    pub ownership: Option<Arc<ownership::Ownership>>,
    /// The names the ledger knows, remembered between passes (`known`).
    pub known: KnownNames,
}

impl Engine {
    /// The fence for a commit about `region`, when ownership is on.
    pub fn fence(&self, region: Option<&str>) -> Option<crate::core::lease::Fence> {
        self.ownership.as_ref().map(|o| o.fence(region))
    }

    /// Whether this instance drives `region` (always, without ownership).
    pub fn owns(&self, region: Option<&str>) -> bool {
        self.ownership.as_ref().is_none_or(|o| o.owns(region))
    }
}
