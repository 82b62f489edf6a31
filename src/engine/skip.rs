//! The operator's skip: the one way past a gap or a quarantined file besides the
//! automatic skip, audited.
//!
//! Invariant: a file skipped before it was ever read gets its content recorded (sha256)
//! here, so the same bytes delivered again later are a duplicate, never a late file.

use super::{Engine, EngineError};
use crate::core::ledger::{FileState, Listed};
use crate::core::sequencer::{Stream, StreamRecord};
use crate::engine::streams::build_streams;
use crate::ports::store::{AuditEntry, Commit};
use tokio_util::sync::CancellationToken;

/// What a skip did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub next_seq: Option<u64>,
    /// Files at that SEQ now marked skipped.
    pub files: Vec<String>,
}

impl Engine {
    /// Marks SEQ `seq` of `region` as skipped, with the operator's reason.
    pub async fn skip(
        &self,
        region: &str,
        seq: u64,
        reason: &str,
        actor: &str,
        cancel: &CancellationToken,
    ) -> Result<Skipped, EngineError> {
        let snapshot = self.store.snapshot().await?;
        let mut streams = build_streams(&snapshot.ledger, &snapshot.streams, None);
        let mut stream = match streams.remove(region) {
            Some(stream) => stream,
            // A region with a configured start may be skipped into before its first file.
            None if self.rules.start.contains_key(region) => {
                Stream::new(StreamRecord { region: region.to_string(), ..Default::default() })
            }
            None => {
                let known: Vec<&str> = streams.keys().map(String::as_str).collect();
                return Err(EngineError::Usage(format!(
                    "unknown region {region:?}: no file or stream of it has been seen (known: {})",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                )));
            }
        };
        if let Some(applied) = snapshot
            .ledger
            .iter()
            .find(|e| e.region() == Some(region) && e.seq() == Some(seq) && e.state.is_processed())
        {
            return Err(EngineError::Operator(format!(
                "{region} SEQ {seq} is already applied ({}); nothing to skip",
                applied.name
            )));
        }
        if let Some(next) = stream.next_seq().filter(|next| seq < *next)
            && !stream.record().skipped.contains(&seq)
        {
            return Err(EngineError::Operator(format!(
                "{region} SEQ {seq} is behind the stream (next expected is {next}); nothing to skip"
            )));
        }
        let now = self.clock.now();
        let mut commit = Commit::default();
        let files = stream.skip(seq);
        // The files' content is recorded with the skip: without the listing it could not be.
        let listing = if files.is_empty() { Vec::new() } else { self.source.list().await? };
        for name in &files {
            let Some(mut e) = snapshot.ledger.iter().find(|e| &e.name == name).cloned() else { continue };
            if e.sha256.is_none() {
                e.sha256 = self.skipped_content(&listing, &e.fingerprint, name).await;
            }
            e.state = FileState::Skipped;
            e.conflict = None;
            e.reason = Some(format!("skipped by operator: {reason}"));
            e.updated_at = now;
            commit.ledger.push(e);
        }
        commit.streams.push(stream.record().clone());
        commit.audit.push(AuditEntry {
            at: now,
            actor: actor.to_string(),
            action: "sequence skip".into(),
            region: Some(region.to_string()),
            seq: Some(seq),
            detail: reason.to_string(),
        });
        self.commit(commit, cancel).await?;
        Ok(Skipped { next_seq: stream.next_seq(), files })
    }

    /// The sha256 of a file being skipped, read while it is still the object that is
    /// skipped (same fingerprint); `None` when it cannot be read now (a later pass
    /// records it while the fingerprint is unchanged).
    async fn skipped_content(&self, listing: &[Listed], fingerprint: &str, name: &str) -> Option<String> {
        let listed =
            listing.iter().find(|l| crate::core::name::object_name(&l.key) == name && l.fingerprint == fingerprint)?;
        match self.content_sha256(listed).await {
            Ok(sha) => Some(sha),
            Err(e) => {
                tracing::warn!(file = %name, error = %e, "cannot read the skipped file now; its content is recorded on a later pass");
                None
            }
        }
    }
}
