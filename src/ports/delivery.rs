//! The record delivery port.
//!
//! Invariant: a file is only marked done by [`FileDelivery::commit`], after
//! [`FileDelivery::settle`] returned, and `settle` returns only when every record sent is
//! durably handed over — applied to the
//! store (in-process) or confirmed by the broker. Records carry their version, so
//! delivering them again (at-least-once) is harmless under the version rule.

use crate::core::full::{Sweep, Swept};
use crate::core::record::{Record, Reject, Tally};
use crate::ports::store::{Commit, FileTicket, StoreError};
use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The broker cannot be reached or dropped the connection.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker returned a message as unroutable (its queue or binding is missing).
    #[error("{0}")]
    Unroutable(String),
    /// The broker's topology differs from this service's, or it refused a declaration.
    #[error("{0}")]
    Topology(String),
    /// A record that cannot be encoded.
    #[error("{0}")]
    Refused(String),
}

impl DeliveryError {
    pub fn is_transient(&self) -> bool {
        match self {
            DeliveryError::Store(e) => e.is_transient(),
            DeliveryError::Unavailable(_) => true,
            // the topology is declared again with the next connection
            DeliveryError::Unroutable(_) => true,
            DeliveryError::Topology(_) => false,
            DeliveryError::Refused(_) => false,
        }
    }
}

#[async_trait]
pub trait Delivery: Send + Sync {
    fn describe(&self) -> String;
    /// `true` when records are applied later by consumers: the file is then *delivered*
    /// (not yet applied) when [`FileDelivery::commit`] returns.
    fn asynchronous(&self) -> bool;
    /// Opens the delivery of one validated file.
    async fn open(&self, ticket: FileTicket) -> Result<Box<dyn FileDelivery>, DeliveryError>;
    /// How many record lines one delivery may take over several files
    /// ([`FileDelivery::next_file`]); 0 when it takes one file only.
    fn group_lines(&self) -> u64 {
        0
    }

    /// Checks that records can be delivered now (readiness): a broker answers and its
    /// topology is as configured. Also reports the dead-letter queue's depth, if any.
    async fn probe(&self) -> Result<DeliveryProbe, DeliveryError>;
}

/// What [`Delivery::probe`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryProbe {
    /// Messages waiting in the dead-letter queue; `None` without a broker.
    pub dead_letter_depth: Option<u64>,
}

#[async_trait]
pub trait FileDelivery: Send {
    /// Hands a batch over.
    async fn send(&mut self, batch: Vec<Record>) -> Result<(), DeliveryError>;
    async fn reject(&mut self, batch: Vec<Reject>) -> Result<(), DeliveryError>;
    /// Waits until every record sent is durably handed over (applied in the file's unit of
    /// work, or confirmed by the broker) and returns what is known of the file's lines
    /// (applied later by consumers: only its rejected lines).
    async fn settle(&mut self) -> Result<Tally, DeliveryError>;
    /// Sweeps the file's region after its records (see `core::full`), in the file's unit
    /// of work; `None` when its records are applied later by consumers (the engine sweeps
    /// once they all are).
    async fn sweep(&mut self, sweep: &Sweep) -> Result<Option<Swept>, DeliveryError>;
    /// Records `commit` (built by the engine from the settled tally), exactly as handed,
    /// together with the records where the store has transactions. Settles first when
    /// that was not called.
    async fn commit(self: Box<Self>, commit: Commit) -> Result<(), DeliveryError>;
    /// Goes on with the next validated file in the same delivery and unit of work (see
    /// [`crate::ports::store::FileTxn::next_file`]): the current file is settled (and
    /// swept); what follows is `ticket`'s. Only where [`Delivery::group_lines`] is above 0.
    async fn next_file(&mut self, ticket: FileTicket) -> Result<(), DeliveryError> {
        Err(DeliveryError::Refused(format!("{}: this delivery takes one file at a time", ticket.file.name)))
    }
}
