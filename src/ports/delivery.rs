//! The record delivery port.
//!
//! Invariant: a file is only marked done after [`FileDelivery::finish`] returned, and
//! `finish` returns only when every record sent is durably handed over — applied to the
//! store (in-process) or confirmed by the broker. Records carry their version, so
//! delivering them again (at-least-once) is harmless under the version rule.

use crate::core::record::{Record, Reject, Tally};
use crate::ports::store::{Commit, FileTicket, StoreError};
use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DeliveryError {
    pub fn is_transient(&self) -> bool {
        match self {
            DeliveryError::Store(e) => e.is_transient(),
        }
    }
}

#[async_trait]
pub trait Delivery: Send + Sync {
    fn describe(&self) -> String;
    /// Opens the delivery of one validated file.
    async fn open(&self, ticket: FileTicket) -> Result<Box<dyn FileDelivery>, DeliveryError>;
}

#[async_trait]
pub trait FileDelivery: Send {
    /// Hands a batch over.
    async fn send(&mut self, batch: Vec<Record>) -> Result<(), DeliveryError>;
    async fn reject(&mut self, batch: Vec<Reject>) -> Result<(), DeliveryError>;
    /// Completes the file: waits until everything is durable, then records `commit`.
    /// Returns what is known of the file's lines (applied later by consumers: zeros).
    async fn finish(self: Box<Self>, commit: Commit) -> Result<Tally, DeliveryError>;
}
