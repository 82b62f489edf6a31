//! S3 event notifications (the AWS / MinIO JSON shape) from an AMQP queue: a hint that
//! starts a pass within seconds of an upload.
//!
//! Invariant: events only ever *wake* the service; what is processed is always decided
//! by a full listing of the prefix (the pass), which also runs every
//! `reconcile_interval` without any event. So a lost, duplicated, reordered or forged
//! notification can delay work until the next reconcile, never change what is applied.

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde::Deserialize;
use std::sync::Arc;
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

/// Whether a notification announces a new object under the watched prefix.
pub fn announces_work(body: &[u8], bucket: &str, prefix: &str) -> Result<bool, String> {
    let n: Notification = serde_json::from_slice(body).map_err(|e| format!("not an S3 event notification: {e}"))?;
    Ok(n.records.iter().any(|r| {
        r.event_name.contains("ObjectCreated")
            && r.s3.bucket.name == bucket
            && decode_key(&r.s3.object.key).starts_with(prefix)
    }))
}

/// Consumes notifications until `cancel`, waking `wake` for each relevant one.
pub fn spawn(settings: EventSettings, wake: Arc<Notify>, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !cancel.is_cancelled() {
            if let Err(e) = listen(&settings, &wake, &cancel).await {
                tracing::warn!(error = %e, queue = %settings.queue, "S3 event notifications unavailable; the periodic listing goes on; retrying");
                tokio::select! { () = tokio::time::sleep(Duration::from_secs(5)) => {}, () = cancel.cancelled() => {} }
            }
        }
    })
}

async fn listen(s: &EventSettings, wake: &Notify, cancel: &CancellationToken) -> Result<(), String> {
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
        match announces_work(&delivery.data, &s.bucket, &s.prefix) {
            Ok(true) => {
                tracing::debug!("S3 event: new object under the prefix; starting a pass");
                wake.notify_one();
            }
            Ok(false) => {}
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
        assert_eq!(announces_work(body, "esr", "inbox/"), Ok(true));
        assert_eq!(announces_work(body, "other", "inbox/"), Ok(false));
        assert_eq!(announces_work(body, "esr", "elsewhere/"), Ok(false));
        let removed = String::from_utf8_lossy(body).replace("ObjectCreated:Put", "ObjectRemoved:Delete");
        assert_eq!(announces_work(removed.as_bytes(), "esr", "inbox/"), Ok(false));
        assert!(announces_work(b"not json", "esr", "").is_err());
        assert_eq!(decode_key("a+b%2Fc%zz"), "a b/c%zz");
    }
}
