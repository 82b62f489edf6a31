//! Consumers: apply record messages to the store under the version rule.
//!
//! Invariants:
//! - A message is acknowledged only after the store returned from writing it (its
//!   records and its receipt): a consumer that dies before the ack leaves the message to
//!   be redelivered, and the receipt makes the second application a no-op.
//! - Transient store errors (WriteConflict, a lost primary, network, SQLite busy) are
//!   retried with backoff and jitter while the message stays unacknowledged; it is never
//!   acknowledged meanwhile and never dead-lettered for them.
//! - A message that can never be applied (it does not decode, or the store refuses a
//!   record permanently) is split: the good records are applied, each poison record is
//!   published to the dead-letter queue with an `x-esr-reason` header and marked in the
//!   store, and only then is the original acknowledged. `dlq replay` puts such records
//!   back; the version rule makes that safe.

use super::link::Link;
use super::message::{self, Poison, single_record_id};
use crate::core::record::Record;
use crate::core::schema::Layouts;
use crate::ports::store::{DeadLetter, DeliveredBatch, Store, StoreError};
use crate::telemetry::heartbeat::{Heartbeat, WorkerBeat};
use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The store tries a transient failure this long before the consumer lets go of the
/// message (unacknowledged, so the broker hands it out again).
const STORE_RETRY_LIMIT: Duration = Duration::from_secs(120);

/// A consumer gathers messages into one store call while they keep coming: until none
/// arrived for this long (the added latency when messages are few)...
const GATHER_QUIET: Duration = Duration::from_millis(20);

/// ...or this long after the first (the added latency under load), or until it holds
/// `prefetch` messages. A backlog thus goes to the store in calls of hundreds of messages:
/// one transaction rewrites each page it touches once, and an identity updated by several
/// of the messages is written once.
const GATHER_AT_MOST: Duration = Duration::from_millis(500);

/// An idle consumer beats this often.
const IDLE_BEAT: Duration = Duration::from_secs(5);

/// A consumer silent this long is wedged: longer than a store retry, a reconnect
/// backoff and a dead-lettering together. A consumer beats at each turn of its loop,
/// before each store call (with its retries) and before dead-lettering a message it cannot
/// decode, so a fallback through hundreds of such steps is progress, not a wedge.
pub const WEDGED_AFTER: Duration = Duration::from_secs(240);

/// Test hook: `ESR_INGEST_FAULT=consumer-exit-after-write` makes the process exit right
/// after a message was written to the store and before it is acknowledged — the window
/// the receipts exist for. Read once; inert unless set.
fn exit_after_write() -> bool {
    static FAULT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FAULT.get_or_init(|| std::env::var("ESR_INGEST_FAULT").is_ok_and(|v| v == "consumer-exit-after-write"))
}

/// The delivery a `multiple` ack must name to settle all of `done`.
fn highest_tag(done: &[Delivery]) -> Option<&Delivery> {
    done.iter().max_by_key(|d| d.delivery_tag)
}

pub struct ConsumerPool {
    link: Arc<Link>,
    store: Arc<dyn Store>,
    layouts: Layouts,
}

impl ConsumerPool {
    pub fn new(link: Arc<Link>, store: Arc<dyn Store>, layouts: Layouts) -> Self {
        Self { link, store, layouts }
    }

    /// Starts the configured number of consumers; they stop when `cancel` fires. Each
    /// beats `heartbeat` on every turn of its loop, idle or not.
    pub fn spawn(self, cancel: CancellationToken, heartbeat: &Heartbeat) -> Vec<tokio::task::JoinHandle<()>> {
        let this = Arc::new(self);
        (0..this.link.settings().consumers)
            .map(|n| {
                let (this, cancel) = (this.clone(), cancel.clone());
                let beat = heartbeat.worker(&format!("consumer {n}"), WEDGED_AFTER);
                tokio::spawn(async move { this.consume_forever(n, cancel, beat).await })
            })
            .collect()
    }

    async fn consume_forever(&self, n: usize, cancel: CancellationToken, beat: Arc<WorkerBeat>) {
        let mut backoff = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(10))
            .without_max_times()
            .build();
        while !cancel.is_cancelled() {
            beat.beat();
            match self.consume(&cancel, &beat).await {
                Ok(()) => break,
                Err(e) => {
                    let wait = backoff.next().unwrap_or(Duration::from_secs(10));
                    tracing::warn!(consumer = n, error = %e, retry_in = ?wait, "consumer lost its channel; reconnecting");
                    if let Some(epoch) = e.epoch {
                        self.link.failed(epoch).await;
                    }
                    tokio::select! { () = tokio::time::sleep(wait) => {}, () = cancel.cancelled() => {} }
                }
            }
        }
    }

    async fn consume(&self, cancel: &CancellationToken, beat: &WorkerBeat) -> Result<(), ConsumeError> {
        let (epoch, conn) = self.link.connection().await.map_err(|e| ConsumeError::new(None, e))?;
        let fail = |e: lapin::Error| ConsumeError::new(Some(epoch), e);
        let channel = conn.create_channel().await.map_err(fail)?;
        let dead_letters = conn.create_channel().await.map_err(fail)?;
        dead_letters.confirm_select(ConfirmSelectOptions::default()).await.map_err(fail)?;
        let s = self.link.settings();
        channel.basic_qos(s.prefetch, BasicQosOptions::default()).await.map_err(fail)?;
        let mut deliveries = channel
            .basic_consume(s.queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map_err(fail)?;
        loop {
            beat.beat();
            let next = tokio::select! {
                next = deliveries.next() => next,
                () = tokio::time::sleep(IDLE_BEAT) => continue,
                () = cancel.cancelled() => return Ok(()),
            };
            let mut ready = match next {
                Some(Ok(d)) => vec![d],
                Some(Err(e)) => return Err(fail(e)),
                None => return Err(ConsumeError::new(Some(epoch), "the broker ended the consumer")),
            };
            // What keeps arriving goes into the same store call (see `GATHER_QUIET`).
            let at_most = tokio::time::Instant::now() + GATHER_AT_MOST;
            while ready.len() < usize::from(s.prefetch) {
                let until = (tokio::time::Instant::now() + GATHER_QUIET).min(at_most);
                match tokio::time::timeout_at(until, deliveries.next()).await {
                    Ok(Some(Ok(d))) => ready.push(d),
                    Ok(Some(Err(e))) => return Err(fail(e)),
                    Ok(None) | Err(_) => break,
                }
            }
            match self.handle(ready, &dead_letters, cancel, beat).await {
                Ok(Handled::Done(done)) => {
                    if exit_after_write() {
                        tracing::error!("ESR_INGEST_FAULT: exiting after the store write, before the ack");
                        std::process::exit(70);
                    }
                    // Every delivery on this channel up to the highest tag is settled: one
                    // ack with `multiple` on that tag covers them all (dead-lettered ones
                    // come first in `done`, whatever their tags).
                    if let Some(last) = highest_tag(&done)
                        && !last.ack(BasicAckOptions { multiple: true }).await.map_err(fail)?
                    {
                        return Err(ConsumeError::new(Some(epoch), "ack not sent: channel closed"));
                    }
                    crate::telemetry::metrics::consumed("acked", done.len() as u64);
                }
                // Stopping, or the store stayed unavailable: leave them unacknowledged;
                // the broker hands them out again (to us after reconnecting, or to another).
                Ok(Handled::LetGo) => {
                    crate::telemetry::metrics::consumed("released", 1);
                    return Err(ConsumeError::new(Some(epoch), "store unavailable"));
                }
                Err(e) => return Err(ConsumeError::new(Some(epoch), e)),
            }
        }
    }

    /// Applies ready messages; returns those to acknowledge.
    async fn handle(
        &self,
        ready: Vec<Delivery>,
        dead_letters: &Channel,
        cancel: &CancellationToken,
        beat: &WorkerBeat,
    ) -> Result<Handled, String> {
        let (mut deliveries, mut batches) = (Vec::with_capacity(ready.len()), Vec::with_capacity(ready.len()));
        let mut done = Vec::with_capacity(ready.len());
        for delivery in ready {
            // The id is the message's receipt: without one, every such message would
            // share the empty receipt, and all but the first would be taken as applied.
            let id = delivery.properties.message_id().as_ref().map(|s| s.as_str()).filter(|id| !id.is_empty());
            let decoded = match id {
                Some(_) => message::decode(&delivery.data, &self.layouts),
                None => Err(Poison("no message id: it cannot be applied exactly once".into())),
            };
            let id = id.unwrap_or_default().to_owned();
            match decoded {
                Ok((message, records)) => {
                    batches.push(DeliveredBatch {
                        receipt: id,
                        file: message.file,
                        generation: message.generation,
                        records,
                    });
                    deliveries.push(delivery);
                }
                Err(Poison(reason)) => {
                    beat.beat(); // each dead-lettering waits for its confirm
                    tracing::error!(message = %id, %reason, "message that cannot be applied; dead-lettered");
                    self.dead_letter(dead_letters, &delivery, &delivery.data, &id, &reason).await?;
                    done.push(delivery);
                }
            }
        }
        match self.apply(&batches, cancel, beat).await {
            Applied::Yes => done.extend(deliveries),
            Applied::Gave => return Ok(Handled::LetGo),
            Applied::Refused(reason) => {
                tracing::warn!(%reason, "the store refused a record; applying these messages record by record");
                for (delivery, batch) in deliveries.into_iter().zip(batches) {
                    if !self.apply_split(&delivery, batch, dead_letters, cancel, beat).await? {
                        return Ok(Handled::LetGo);
                    }
                    done.push(delivery);
                }
            }
        }
        Ok(Handled::Done(done))
    }

    /// Applies one message record by record, dead-lettering the records the store
    /// refuses. Returns false when the store became unavailable.
    async fn apply_split(
        &self,
        delivery: &Delivery,
        batch: DeliveredBatch,
        dead_letters: &Channel,
        cancel: &CancellationToken,
        beat: &WorkerBeat,
    ) -> Result<bool, String> {
        match self.apply(std::slice::from_ref(&batch), cancel, beat).await {
            Applied::Yes => return Ok(true),
            Applied::Gave => return Ok(false),
            Applied::Refused(_) => {}
        }
        for record in &batch.records {
            let single = DeliveredBatch {
                receipt: single_record_id(&batch.file, batch.generation, record.version.line),
                file: batch.file.clone(),
                generation: batch.generation,
                records: vec![record.clone()],
            };
            match self.apply(std::slice::from_ref(&single), cancel, beat).await {
                Applied::Yes => {}
                Applied::Gave => return Ok(false),
                Applied::Refused(reason) => {
                    self.dead_letter_record(dead_letters, delivery, &single, record, &reason).await?;
                }
            }
        }
        Ok(true)
    }

    /// One store call, retried while the store fails transiently (beating first: see
    /// [`WEDGED_AFTER`]).
    async fn apply(&self, batches: &[DeliveredBatch], cancel: &CancellationToken, beat: &WorkerBeat) -> Applied {
        beat.beat();
        let mut backoff = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(5))
            .with_total_delay(Some(STORE_RETRY_LIMIT))
            .without_max_times()
            .build();
        loop {
            match self.store.apply_delivered(batches.to_vec()).await {
                Ok(_) => return Applied::Yes,
                Err(e) if e.is_transient() => match backoff.next() {
                    Some(wait) if !cancel.is_cancelled() => {
                        crate::telemetry::metrics::retry(e.retry_cause());
                        tracing::warn!(messages = batches.len(), error = %e, retry_in = ?wait, "transient store error; retrying (messages not acknowledged)");
                        tokio::time::sleep(wait).await;
                    }
                    _ => return Applied::Gave,
                },
                Err(StoreError::Closed) => return Applied::Gave,
                Err(e) => return Applied::Refused(e.to_string()),
            }
        }
    }

    async fn dead_letter_record(
        &self,
        channel: &Channel,
        delivery: &Delivery,
        single: &DeliveredBatch,
        record: &Record,
        reason: &str,
    ) -> Result<(), String> {
        let body = match message::encode(std::slice::from_ref(record), single.generation) {
            Ok(body) => body,
            Err(Poison(e)) => e.into_bytes(),
        };
        tracing::error!(message = %single.receipt, file = %single.file, line = record.version.line, %reason, "record dead-lettered");
        self.dead_letter(channel, delivery, &body, &single.receipt, reason).await?;
        let mark = DeadLetter {
            file: single.file.clone(),
            generation: single.generation,
            line: record.version.line,
            reason: reason.to_string(),
        };
        // Bounded like a store call's retries, so the consumer beats again within its limit.
        let mut backoff = ExponentialBuilder::default()
            .with_jitter()
            .with_max_delay(Duration::from_secs(5))
            .with_total_delay(Some(STORE_RETRY_LIMIT))
            .with_max_times(20)
            .build();
        loop {
            match self.store.mark_dead_lettered(vec![mark.clone()]).await {
                Ok(()) => return Ok(()),
                Err(e) => match backoff.next() {
                    Some(wait) if e.is_transient() => tokio::time::sleep(wait).await,
                    _ => {
                        tracing::error!(error = %e, "cannot mark a dead-lettered line in the store; its file stays in flight");
                        return Ok(());
                    }
                },
            }
        }
    }

    /// Publishes a copy to the dead-letter queue (confirmed) with the reason.
    async fn dead_letter(
        &self,
        channel: &Channel,
        original: &Delivery,
        body: &[u8],
        id: &str,
        reason: &str,
    ) -> Result<(), String> {
        let mut headers = original.properties.headers().clone().unwrap_or_default();
        headers.insert("x-esr-reason".into(), AMQPValue::LongString(reason.into()));
        let properties = BasicProperties::default()
            .with_message_id(id.into())
            .with_content_type("application/json".into())
            .with_type(message::SCHEMA.into())
            .with_delivery_mode(2)
            .with_headers(headers);
        let s = self.link.settings();
        let confirm = channel
            .basic_publish(
                "".into(),
                s.dead_letter_queue.as_str().into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                body,
                properties,
            )
            .await
            .map_err(|e| format!("dead-lettering {id}: {e}"))?
            .await
            .map_err(|e| format!("dead-lettering {id}: {e}"))?;
        match confirm {
            Confirmation::Ack(None) | Confirmation::NotRequested => {
                crate::telemetry::metrics::consumed("dead_lettered", 1);
                Ok(())
            }
            _ => Err(format!("dead-lettering {id}: the dead-letter queue did not take it")),
        }
    }
}

enum Handled {
    Done(Vec<Delivery>),
    LetGo,
}

enum Applied {
    Yes,
    Gave,
    Refused(String),
}

#[derive(Debug)]
struct ConsumeError {
    epoch: Option<u64>,
    detail: String,
}

impl ConsumeError {
    fn new(epoch: Option<u64>, e: impl std::fmt::Display) -> Self {
        Self { epoch, detail: e.to_string() }
    }
}

impl std::fmt::Display for ConsumeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `done` lists dead-lettered messages first: when one of them has the batch's highest
    /// tag, the one `multiple` ack must still reach it.
    #[test]
    fn the_ack_covers_a_dead_lettered_message_with_the_highest_tag() {
        let mock = |tag| Delivery::mock(tag, "".into(), "".into(), false, Vec::new());
        let done = vec![mock(9), mock(3), mock(5), mock(4)];
        assert_eq!(highest_tag(&done).map(|d| d.delivery_tag), Some(9));
        assert!(highest_tag(&[]).is_none());
    }
}
