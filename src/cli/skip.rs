//! `sequence skip`: the operator's way past a gap or a quarantined file, audited.

use super::{EXIT_OK, UsageError, app};
use crate::config::Settings;
use crate::core::ledger::FileState;
use crate::core::sequencer::{Stream, StreamRecord};
use crate::engine::status::status_doc;
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
    let record = snapshot
        .streams
        .iter()
        .find(|s| s.region == region)
        .cloned()
        .unwrap_or_else(|| StreamRecord { region: region.clone(), ..Default::default() });
    let mut stream = Stream::new(record);
    for e in snapshot.ledger.iter().filter(|e| e.region() == Some(region.as_str())) {
        if let Some(s) = e.seq() {
            stream.observe(&e.name, s, e.state);
        }
    }
    stream.settle();
    if let Some(applied) = snapshot
        .ledger
        .iter()
        .find(|e| e.region() == Some(region.as_str()) && e.seq() == Some(seq) && e.state == FileState::Applied)
    {
        anyhow::bail!("{region} SEQ {seq} is already applied ({}); nothing to skip", applied.name);
    }
    if stream.next_seq().is_some_and(|next| seq < next) && !stream.record().skipped.contains(&seq) {
        anyhow::bail!(
            "{region} SEQ {seq} is behind the stream (next expected is {}); nothing to skip",
            stream.next_seq().unwrap_or_default()
        );
    }
    let now = Utc::now();
    let skipped_files = stream.skip(seq);
    let mut commit = Commit::default();
    for name in &skipped_files {
        if let Some(e) = snapshot.ledger.iter().find(|e| &e.name == name) {
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
        detail: reason.clone(),
    });
    store.commit(commit).await?;
    let after = store.snapshot().await?;
    let doc = status_doc(&after, store.counts().await?, &[], &settings.rules, now);
    let next = doc.streams.iter().find(|s| s.region == region).and_then(|s| s.next_seq);
    println!(
        "skipped {region} SEQ {seq} ({reason}); next expected SEQ: {}",
        next.map_or("not set yet".into(), |n| n.to_string())
    );
    Ok(EXIT_OK)
}
