//! `sequence skip`: the operator's way past a gap or a quarantined file, audited.

use super::{EXIT_OK, UsageError, app};
use crate::config::Settings;
use crate::core::ledger::FileState;
use crate::core::sequencer::{Stream, StreamRecord};
use crate::engine::streams::build_streams;
use crate::ports::store::{AuditEntry, Commit};
use chrono::Utc;

pub async fn skip(settings: Settings, region: String, seq: u64, reason: String) -> anyhow::Result<i32> {
    if reason.trim().is_empty() {
        return Err(UsageError("--reason must say why the SEQ is skipped".into()).into());
    }
    if seq == 0 {
        return Err(UsageError("--seq must be greater than 0".into()).into());
    }
    let store = app::open_store(&settings).await?;
    let snapshot = store.snapshot().await?;
    let mut streams = build_streams(&snapshot.ledger, &snapshot.streams, None);
    let stream = match streams.remove(&region) {
        Some(stream) => stream,
        // A region with a configured start may be skipped into before its first file.
        None if settings.rules.start.contains_key(&region) => {
            Stream::new(StreamRecord { region: region.clone(), ..Default::default() })
        }
        None => {
            let known: Vec<&str> = streams.keys().map(String::as_str).collect();
            return Err(UsageError(format!(
                "unknown region {region:?}: no file or stream of it has been seen (known: {})",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ))
            .into());
        }
    };
    if let Some(applied) = snapshot
        .ledger
        .iter()
        .find(|e| e.region() == Some(region.as_str()) && e.seq() == Some(seq) && e.state.is_processed())
    {
        anyhow::bail!("{region} SEQ {seq} is already applied ({}); nothing to skip", applied.name);
    }
    if let Some(next) = stream.next_seq().filter(|next| seq < *next)
        && !stream.record().skipped.contains(&seq)
    {
        anyhow::bail!("{region} SEQ {seq} is behind the stream (next expected is {next}); nothing to skip");
    }
    commit_skip(&*store, stream, &snapshot.ledger, seq, &reason).await
}

async fn commit_skip(
    store: &dyn crate::ports::store::Store,
    mut stream: Stream,
    ledger: &[crate::core::ledger::LedgerEntry],
    seq: u64,
    reason: &str,
) -> anyhow::Result<i32> {
    let now = Utc::now();
    let region = stream.region().to_string();
    let mut commit = Commit::default();
    for name in stream.skip(seq) {
        if let Some(e) = ledger.iter().find(|e| e.name == name) {
            let mut e = e.clone();
            e.state = FileState::Skipped;
            e.reason = Some(format!("skipped by operator: {reason}"));
            e.updated_at = now;
            commit.ledger.push(e);
        }
    }
    commit.streams.push(stream.record().clone());
    commit.audit.push(AuditEntry {
        at: now,
        actor: std::env::var("USER").unwrap_or_else(|_| "operator".into()),
        action: "sequence skip".into(),
        region: Some(region.clone()),
        seq: Some(seq),
        detail: reason.to_string(),
    });
    store.commit(commit).await?;
    println!(
        "skipped {region} SEQ {seq} ({reason}); next expected SEQ: {}",
        stream.next_seq().map_or("not set yet".into(), |n| n.to_string())
    );
    Ok(EXIT_OK)
}
