//! In-process delivery: records are applied straight into the store's unit of work for
//! the file, so records, ledger state and stream advance commit in one transaction.

use crate::core::full::{Sweep, Swept};
use crate::core::record::{Record, Reject, Tally};
use crate::ports::delivery::{Delivery, DeliveryError, DeliveryProbe, FileDelivery};
use crate::ports::store::{Commit, FileTicket, FileTxn, Store};
use async_trait::async_trait;
use std::sync::Arc;

pub struct InProcessDelivery {
    store: Arc<dyn Store>,
}

impl InProcessDelivery {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

#[async_trait]
impl Delivery for InProcessDelivery {
    fn describe(&self) -> String {
        "in-process".into()
    }

    fn asynchronous(&self) -> bool {
        false
    }

    async fn open(&self, ticket: FileTicket) -> Result<Box<dyn FileDelivery>, DeliveryError> {
        Ok(Box::new(InProcessFile { txn: self.store.begin_file(ticket).await? }))
    }

    fn group_lines(&self) -> u64 {
        self.store.group_lines()
    }

    async fn probe(&self) -> Result<DeliveryProbe, DeliveryError> {
        Ok(DeliveryProbe::default())
    }
}

struct InProcessFile {
    txn: Box<dyn FileTxn>,
}

#[async_trait]
impl FileDelivery for InProcessFile {
    async fn send(&mut self, batch: Vec<Record>) -> Result<(), DeliveryError> {
        Ok(self.txn.apply(batch).await?)
    }

    async fn reject(&mut self, batch: Vec<Reject>) -> Result<(), DeliveryError> {
        Ok(self.txn.reject(batch).await?)
    }

    async fn settle(&mut self) -> Result<Tally, DeliveryError> {
        Ok(self.txn.settle().await?)
    }

    async fn sweep(&mut self, sweep: &Sweep) -> Result<Option<Swept>, DeliveryError> {
        Ok(Some(self.txn.sweep(sweep).await?))
    }

    async fn commit(self: Box<Self>, commit: Commit) -> Result<(), DeliveryError> {
        Ok(self.txn.commit(commit).await?)
    }

    async fn next_file(&mut self, ticket: FileTicket) -> Result<(), DeliveryError> {
        Ok(self.txn.next_file(ticket).await?)
    }
}
