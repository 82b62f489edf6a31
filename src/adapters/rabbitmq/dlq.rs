//! The dead-letter queue: list, replay and purge.
//!
//! Listing takes messages with `basic.get` without acknowledging them and closes the
//! channel, which puts every one back. Replaying publishes a copy to the records exchange
//! (confirmed, same message id) before acknowledging the dead-lettered one, so a crash in
//! between leaves a duplicate at worst — harmless under the version rule and the receipts.

use super::Link;
use super::topology::ROUTING_KEY;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct DeadMessage {
    pub message_id: String,
    pub file: Option<String>,
    pub line: Option<i64>,
    pub records: Option<i64>,
    /// `x-esr-reason` (set by a consumer), else the broker's `x-death` reason.
    pub reason: String,
    pub bytes: usize,
}

fn header<'a>(p: &'a BasicProperties, key: &str) -> Option<&'a AMQPValue> {
    p.headers().as_ref()?.inner().get(key)
}

fn text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn number(v: &AMQPValue) -> Option<i64> {
    match v {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

/// Why the broker dead-lettered it, from the first `x-death` entry.
fn death_reason(p: &BasicProperties) -> Option<String> {
    let AMQPValue::FieldArray(deaths) = header(p, "x-death")? else { return None };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else { return None };
    let reason = first.inner().get("reason").and_then(text)?;
    let queue = first.inner().get("queue").and_then(text).unwrap_or_default();
    let count = first.inner().get("count").and_then(number).unwrap_or(1);
    Some(format!("dead-lettered by the broker: {reason} (queue {queue}, {count} time(s))"))
}

fn describe(p: &BasicProperties, bytes: usize) -> DeadMessage {
    DeadMessage {
        message_id: p.message_id().as_ref().map(|s| s.as_str().to_owned()).unwrap_or_default(),
        file: header(p, "x-esr-file").and_then(text),
        line: header(p, "x-esr-line").and_then(number),
        records: header(p, "x-esr-records").and_then(number),
        reason: header(p, "x-esr-reason")
            .and_then(text)
            .or_else(|| death_reason(p))
            .unwrap_or_else(|| "unknown".into()),
        bytes,
    }
}

async fn open(link: &Link) -> Result<(Channel, u32), String> {
    let (_, conn) = link.connection().await.map_err(|e| e.to_string())?;
    let channel = conn.create_channel().await.map_err(|e| e.to_string())?;
    let queue = channel
        .queue_declare(
            link.settings().dead_letter_queue.as_str().into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok((channel, queue.message_count()))
}

/// Up to `limit` dead-lettered messages, left in the queue.
pub async fn list(link: &Link, limit: usize) -> Result<(Vec<DeadMessage>, u32), String> {
    let (channel, total) = open(link).await?;
    let mut out = Vec::new();
    while out.len() < limit.min(total as usize) {
        let got = channel
            .basic_get(link.settings().dead_letter_queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .map_err(|e| e.to_string())?;
        let Some(m) = got else { break };
        out.push(describe(&m.delivery.properties, m.delivery.data.len()));
    }
    // Closing the channel returns every unacknowledged message to the queue.
    let _ = channel.close(200, "listed".into()).await;
    Ok((out, total))
}

/// Moves dead-lettered messages (of one file, or all) back to the records queue.
pub async fn replay(link: &Link, file: Option<&str>) -> Result<(u64, u64), String> {
    let (channel, total) = open(link).await?;
    let (_, conn) = link.connection().await.map_err(|e| e.to_string())?;
    let publisher = conn.create_channel().await.map_err(|e| e.to_string())?;
    publisher.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| e.to_string())?;
    let s = link.settings();
    let (mut replayed, mut kept) = (0u64, 0u64);
    for _ in 0..total {
        let got = channel
            .basic_get(s.dead_letter_queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .map_err(|e| e.to_string())?;
        let Some(m) = got else { break };
        let d = describe(&m.delivery.properties, m.delivery.data.len());
        if file.is_some_and(|f| d.file.as_deref() != Some(f)) {
            kept += 1; // left unacknowledged: back in the queue when the channel closes
            continue;
        }
        let mut headers = m.delivery.properties.headers().clone().unwrap_or_default();
        let mut clean = FieldTable::default();
        for (k, v) in headers.inner() {
            if !matches!(
                k.as_str(),
                "x-death"
                    | "x-first-death-exchange"
                    | "x-first-death-queue"
                    | "x-first-death-reason"
                    | "x-last-death-exchange"
                    | "x-last-death-queue"
                    | "x-last-death-reason"
                    | "x-delivery-count"
            ) {
                clean.insert(k.clone(), v.clone());
            }
        }
        headers = clean;
        headers.insert("x-esr-replayed".into(), AMQPValue::Boolean(true));
        let properties = m.delivery.properties.clone().with_headers(headers);
        let confirm = publisher
            .basic_publish(
                s.exchange.as_str().into(),
                ROUTING_KEY.into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                &m.delivery.data,
                properties,
            )
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        if !matches!(confirm, Confirmation::Ack(None)) {
            return Err(format!("the broker did not take replayed message {}", d.message_id));
        }
        m.delivery.ack(BasicAckOptions::default()).await.map_err(|e| e.to_string())?;
        replayed += 1;
    }
    let _ = channel.close(200, "replayed".into()).await;
    let _ = publisher.close(200, "replayed".into()).await;
    Ok((replayed, kept))
}

/// Deletes every dead-lettered message; returns how many.
pub async fn purge(link: &Link) -> Result<u32, String> {
    let (channel, _) = open(link).await?;
    let n = channel
        .queue_purge(link.settings().dead_letter_queue.as_str().into(), Default::default())
        .await
        .map_err(|e| e.to_string())?;
    let _ = channel.close(200, "purged".into()).await;
    Ok(n)
}
