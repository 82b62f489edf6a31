//! Completing files delivered through a broker.
//!
//! Invariant: a file handed to the broker is `delivered`, not `applied`, until the
//! consumers' receipts and dead-letter marks for its delivery (its generation), plus its
//! rejected lines, account for every record line. Only then is it marked applied and
//! counted — so a lost message leaves its file visibly in flight, never silently
//! "applied".

use super::{Engine, EngineError};
use crate::core::ledger::{FileState, LedgerEntry};
use crate::core::record::Tally;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// A delivered file whose records are not all accounted for yet.
#[derive(Clone, Debug, Serialize)]
pub struct InFlightFile {
    pub file: String,
    pub region: Option<String>,
    pub seq: Option<u64>,
    pub generation: u32,
    pub record_lines: u64,
    /// Records the broker confirmed: every record line not rejected (a file is only
    /// delivered once all are).
    pub confirmed: u64,
    pub applied: u64,
    pub stale: u64,
    pub unchanged: u64,
    pub rejected: u64,
    pub dead_lettered: u64,
}

impl InFlightFile {
    fn new(e: &LedgerEntry, t: Tally) -> Self {
        Self {
            file: e.name.clone(),
            region: e.region().map(str::to_string),
            seq: e.seq(),
            generation: e.generation,
            record_lines: e.record_lines,
            confirmed: e.record_lines.saturating_sub(t.rejected),
            applied: t.applied,
            stale: t.stale,
            unchanged: t.unchanged,
            rejected: t.rejected,
            dead_lettered: t.dead_lettered,
        }
    }
}

/// The progress of one delivered file: its receipts plus its rejects.
pub async fn progress(store: &dyn crate::ports::store::Store, e: &LedgerEntry) -> Result<Tally, EngineError> {
    let mut t = store.delivery_progress(&e.name, e.generation).await?;
    t.rejected = e.tally.rejected;
    t.ignored = e.tally.ignored;
    Ok(t)
}

/// Files still in flight, with their counts (for `status`).
pub async fn in_flight(
    store: &dyn crate::ports::store::Store,
    ledger: &[LedgerEntry],
) -> Result<Vec<InFlightFile>, EngineError> {
    let mut out = Vec::new();
    for e in ledger.iter().filter(|e| e.state == FileState::Delivered) {
        out.push(InFlightFile::new(e, progress(store, e).await?));
    }
    Ok(out)
}

impl Engine {
    /// Marks applied every delivered file whose records are all accounted for; returns
    /// the files still in flight.
    pub async fn complete_deliveries(&self, cancel: &CancellationToken) -> Result<Vec<InFlightFile>, EngineError> {
        let delivered = self.store.files_in_state(FileState::Delivered).await?;
        let mut waiting = Vec::new();
        for e in delivered.iter().filter(|e| self.owns(e.region())) {
            let t = progress(self.store.as_ref(), e).await?;
            if t.total() < e.record_lines {
                waiting.push(InFlightFile::new(e, t));
                continue;
            }
            let mut done = e.clone();
            done.updated_at = self.clock.now();
            // Every record of the file is applied now: sweep its region (`core::full`).
            let (mut t, mut audit) = (t, Vec::new());
            if let Some(sweep) = self.sweep_for(e) {
                let swept = super::retry::retry_transient("sweeping a region", cancel, || async {
                    Ok(self.store.sweep(&sweep).await?)
                })
                .await?;
                t.removed = swept.removed;
                audit = self.sweep_audit(&sweep, swept);
            }
            let mut commit = super::door::applied(done, t);
            commit.audit = audit;
            match self.commit(commit, cancel).await {
                Err(err) if err.is_fenced() => continue, // left to the new owner by `commit`
                other => other?,
            }
            tracing::info!(
                file = %e.name,
                region = e.region().unwrap_or_default(),
                seq = e.seq().unwrap_or_default(),
                applied = t.applied,
                stale = t.stale,
                unchanged = t.unchanged,
                rejected = t.rejected,
                dead_lettered = t.dead_lettered,
                removed = t.removed,
                "file applied by the consumers"
            );
        }
        Ok(waiting)
    }
}
