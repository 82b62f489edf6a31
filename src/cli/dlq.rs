//! `dlq list | replay | purge`.

use super::{DlqAction, EXIT_OK, UsageError};
use crate::adapters::rabbitmq::{Link, dlq};
use crate::config::Settings;
use std::io::Write;

pub async fn dlq(settings: Settings, action: DlqAction) -> anyhow::Result<i32> {
    let Some(url) = &settings.broker else {
        return Err(
            UsageError("dlq needs a broker: pass --broker amqp://... (or set broker in the config)".into()).into()
        );
    };
    let link = Link::new(url, "esr-ingest dlq", settings.rabbitmq.clone());
    let queue = settings.rabbitmq.dead_letter_queue.clone();
    match action {
        DlqAction::List { json, limit } => {
            let (messages, total) = dlq::list(&link, limit).await.map_err(anyhow::Error::msg)?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(
                    &mut out,
                    &serde_json::json!({ "queue": queue, "total": total, "messages": messages }),
                )?;
                writeln!(out)?;
            } else {
                writeln!(out, "{queue}: {total} message(s)")?;
                for m in &messages {
                    let at = match (&m.file, m.line) {
                        (Some(f), Some(l)) => format!("{f} line {l}"),
                        (Some(f), None) => f.clone(),
                        _ => "-".into(),
                    };
                    writeln!(out, "  {}  {at}  {}", m.message_id, m.reason)?;
                }
            }
        }
        DlqAction::Replay { file } => {
            let (replayed, kept) = dlq::replay(&link, file.as_deref()).await.map_err(anyhow::Error::msg)?;
            println!("replayed {replayed} message(s) to {}; {kept} left in {queue}", settings.rabbitmq.queue);
        }
        DlqAction::Purge { yes } => {
            if !yes {
                return Err(UsageError(format!(
                    "dlq purge deletes every message in {queue} for good (their records are never applied); add --yes"
                ))
                .into());
            }
            let n = dlq::purge(&link).await.map_err(anyhow::Error::msg)?;
            println!("purged {n} message(s) from {queue}");
        }
    }
    Ok(EXIT_OK)
}
