//! S3 event notifications (the AWS / MinIO JSON shape) from an AMQP queue: a hint that
//! starts a pass within seconds of an upload.
//!
//! Invariant: events only ever *wake* the service and name keys to look at; what is
//! processed is decided by the objects themselves as the source lists them (a pass
//! looks up each named key, and a full listing of the prefix runs every
//! `reconcile_interval` without any event). So a lost, duplicated, reordered or forged
//! notification can delay work until the next reconcile, never change what is applied.
//! The keys waiting for a pass are bounded ([`ANNOUNCED_KEYS`]); past the bound the next
//! pass is a full one.

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Where notifications come from and which objects matter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSettings {
    pub url: String,
    pub queue: String,
    /// Bound to `queue` when set (MinIO publishes to an exchange).
    pub exchange: Option<String>,
    pub routing_key: String,
    pub bucket: String,
    pub prefix: String,
}

#[derive(Deserialize)]
struct Notification {
    #[serde(rename = "Records", default)]
    records: Vec<EventRecord>,
}

#[derive(Deserialize)]
struct EventRecord {
    #[serde(rename = "eventName", default)]
    event_name: String,
    s3: EventS3,
}

#[derive(Deserialize)]
struct EventS3 {
    bucket: EventBucket,
    object: EventObject,
}

#[derive(Deserialize)]
struct EventBucket {
    name: String,
}

#[derive(Deserialize)]
struct EventObject {
    key: String,
}

/// Object keys in notifications are URL-encoded (`+` for a space).
fn decode_key(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The keys of the new objects under the watched prefix a notification announces.
pub fn announced_keys(body: &[u8], bucket: &str, prefix: &str) -> Result<Vec<String>, String> {
    let n: Notification = serde_json::from_slice(body).map_err(|e| format!("not an S3 event notification: {e}"))?;
    Ok(n.records
        .iter()
        .filter(|r| r.event_name.contains("ObjectCreated") && r.s3.bucket.name == bucket)
        .map(|r| decode_key(&r.s3.object.key))
        .filter(|key| key.starts_with(prefix))
        .collect())
}

/// How many announced keys wait for a pass at most; past it, the next pass is full.
pub const ANNOUNCED_KEYS: usize = 1_000;

/// The keys announced and not yet taken by a pass, and the wake-up for the pass loop.
pub struct Announced {
    /// `None` once more than [`ANNOUNCED_KEYS`] wait: a full pass is needed.
    keys: Mutex<Option<BTreeSet<String>>>,
    wake: Notify,
}

impl Default for Announced {
    fn default() -> Self {
        Self { keys: Mutex::new(Some(BTreeSet::new())), wake: Notify::new() }
    }
}

impl Announced {
    /// Adds keys for the next pass and wakes it.
    pub fn add(&self, keys: impl IntoIterator<Item = String>) {
        self.give_back(keys);
        self.wake.notify_one();
    }

    /// Asks for a full pass (more keys than one look-up each is worth) and wakes it.
    pub fn add_everything(&self) {
        *self.keys.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.wake.notify_one();
    }

    /// Gives keys back after a pass that did not finish with them (no wake-up: the next
    /// event or the reconcile runs the pass).
    pub fn give_back(&self, keys: impl IntoIterator<Item = String>) {
        let mut waiting = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(set) = waiting.as_mut() {
            set.extend(keys);
            if set.len() > ANNOUNCED_KEYS {
                *waiting = None;
            }
        }
    }

    /// The keys waiting, emptied; `None` when too many arrived for one look-up each.
    pub fn take(&self) -> Option<Vec<String>> {
        let mut waiting = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        waiting.replace(BTreeSet::new()).map(|set| set.into_iter().collect())
    }

    /// Resolves when keys were added since the last call (or a wake is pending).
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Keeps a wake-up for the next [`Announced::woken`].
    pub fn wake_again(&self) {
        self.wake.notify_one();
    }
}

/// Consumes notifications until `cancel`, adding the keys of each relevant one.
pub fn spawn(settings: EventSettings, wake: Arc<Announced>, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !cancel.is_cancelled() {
            if let Err(e) = listen(&settings, &wake, &cancel).await {
                tracing::warn!(error = %e, queue = %settings.queue, "S3 event notifications unavailable; the periodic listing goes on; retrying");
                tokio::select! { () = tokio::time::sleep(Duration::from_secs(5)) => {}, () = cancel.cancelled() => {} }
            }
        }
    })
}

async fn listen(s: &EventSettings, wake: &Announced, cancel: &CancellationToken) -> Result<(), String> {
    let props = ConnectionProperties::default().with_connection_name("esr-ingest s3 events".into());
    let conn = tokio::time::timeout(Duration::from_secs(10), Connection::connect(&s.url, props))
        .await
        .map_err(|_| "no answer from the broker".to_string())?
        .map_err(|e| e.to_string())?;
    let channel = conn.create_channel().await.map_err(|e| e.to_string())?;
    channel
        .queue_declare(s.queue.as_str().into(), QueueDeclareOptions::durable(), FieldTable::default())
        .await
        .map_err(|e| e.to_string())?;
    if let Some(exchange) = &s.exchange {
        channel
            .queue_bind(
                s.queue.as_str().into(),
                exchange.as_str().into(),
                s.routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut events = channel
        .basic_consume(s.queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(queue = %s.queue, "listening for S3 event notifications");
    loop {
        let next = tokio::select! { n = events.next() => n, () = cancel.cancelled() => return Ok(()) };
        let delivery = match next {
            Some(Ok(d)) => d,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("the broker ended the consumer".into()),
        };
        match announced_keys(&delivery.data, &s.bucket, &s.prefix) {
            Ok(keys) if !keys.is_empty() => {
                tracing::debug!(keys = keys.len(), "S3 event: new object under the prefix; starting a pass");
                wake.add(keys);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "ignoring a message on the S3 events queue"),
        }
        delivery.ack(BasicAckOptions::default()).await.map_err(|e| e.to_string())?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minio_and_aws_notifications_are_understood() {
        let body = br#"{"EventName":"s3:ObjectCreated:Put","Key":"esr/inbox/DE_SEV_RMC_20220730_00001157.DAT",
          "Records":[{"eventVersion":"2.0","eventSource":"minio:s3","eventName":"s3:ObjectCreated:Put",
          "s3":{"bucket":{"name":"esr"},"object":{"key":"inbox%2FDE_SEV_RMC_20220730_00001157.DAT","size":10}}}]}"#;
        let key = "inbox/DE_SEV_RMC_20220730_00001157.DAT".to_string();
        assert_eq!(announced_keys(body, "esr", "inbox/"), Ok(vec![key]));
        assert_eq!(announced_keys(body, "other", "inbox/"), Ok(vec![]));
        assert_eq!(announced_keys(body, "esr", "elsewhere/"), Ok(vec![]));
        let removed = String::from_utf8_lossy(body).replace("ObjectCreated:Put", "ObjectRemoved:Delete");
        assert_eq!(announced_keys(removed.as_bytes(), "esr", "inbox/"), Ok(vec![]));
        assert!(announced_keys(b"not json", "esr", "").is_err());
        assert_eq!(decode_key("a+b%2Fc%zz"), "a b/c%zz");
    }

    #[test]
    fn announced_keys_are_bounded_and_taken_once() {
        let announced = Announced::default();
        announced.add(["b".to_string(), "a".to_string(), "a".to_string()]);
        assert_eq!(announced.take(), Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(announced.take(), Some(vec![]));
        announced.give_back(vec!["c".into()]);
        assert_eq!(announced.take(), Some(vec!["c".to_string()]));
        announced.add((0..=ANNOUNCED_KEYS).map(|i| i.to_string()));
        assert_eq!(announced.take(), None, "past the bound, a full pass");
        announced.add(["d".to_string()]);
        assert_eq!(announced.take(), Some(vec!["d".to_string()]), "the bound starts afresh");
    }
}
