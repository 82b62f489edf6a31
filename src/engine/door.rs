//! The one door for writes that change a stream or the ledger.
//!
//! Invariant: every such write — a pass's discoveries and files, a delivery's start, a
//! broker file's completion, a backfill, an operator's skip — reaches the store through
//! [`Engine::commit`] or [`Engine::commit_file`]. They give the commit its idempotency id
//! (kept across retries, so a write that took effect but lost its reply is not applied
//! twice), attach its region's fence when ownership is on, and turn a refusal by the fence
//! into the region being left to its new owner. The commit is complete when it leaves
//! here: adapters persist it as handed.
//!
//! The rule for counting an applied file lives here too ([`applied`]), so a pass, a
//! backfill and the consumers' completion count a file the same way: once in
//! `applied_files`, the first time it becomes applied; its records every time.

use super::retry::retry_transient;
use super::{Engine, EngineError};
use crate::core::ledger::{FileState, LedgerEntry};
use crate::core::record::Tally;
use crate::core::sequencer::StreamRecord;
use crate::ports::delivery::FileDelivery;
use crate::ports::store::{Commit, CounterDelta};
use tokio_util::sync::CancellationToken;

/// The commit that records `entry` as applied with `tally`. The file counts in
/// `applied_files` only if it was never counted (its `counted` flag), and then only while
/// no other writer (a backfill racing a pass) counted it meanwhile. Rejected lines are
/// counted where they are kept, not here.
pub(super) fn applied(mut entry: LedgerEntry, tally: Tally) -> Commit {
    let first = !entry.counted;
    entry.state = FileState::Applied;
    entry.tally = tally;
    entry.counted = true;
    let records = Tally { rejected: 0, ..tally };
    Commit {
        expect_uncounted: if first { vec![entry.name.clone()] } else { Vec::new() },
        counters: CounterDelta { applied_files: u64::from(first), duplicate_files: 0, records },
        ledger: vec![entry],
        ..Default::default()
    }
}

/// The commit that completes a file's delivery: applied (in-process), or delivered to a
/// broker (its records are counted when the consumers have applied them all).
fn delivered(mut entry: LedgerEntry, tally: Tally) -> Commit {
    if entry.state == FileState::Applied {
        return applied(entry, tally);
    }
    entry.tally = tally;
    Commit { ledger: vec![entry], ..Default::default() }
}

impl Engine {
    /// Writes a commit (see the module docs); retries transient store errors.
    pub(super) async fn commit(&self, mut commit: Commit, cancel: &CancellationToken) -> Result<(), EngineError> {
        if commit.is_empty() {
            return Ok(());
        }
        let region = self.prepare(&mut commit);
        let written = retry_transient("writing to the store", cancel, || {
            let c = commit.clone();
            async move { Ok(self.store.commit(c).await?) }
        })
        .await;
        self.note_fenced(region.as_deref(), &written);
        written
    }

    /// Completes a delivered file: waits until its records are durably handed over, builds
    /// its commit from their tally (with `streams`: the stream's advance, if any), and
    /// writes it through the delivery (in one transaction with the records where the
    /// store has them). Not retried: a failed file is processed again by a later pass.
    /// Returns the entry as written.
    pub(super) async fn commit_file(
        &self,
        mut delivery: Box<dyn FileDelivery>,
        entry: LedgerEntry,
        streams: Vec<StreamRecord>,
    ) -> Result<LedgerEntry, EngineError> {
        let tally = delivery.settle().await?;
        let mut commit = delivered(entry, tally);
        commit.streams = streams;
        let region = self.prepare(&mut commit);
        let written = commit.ledger[0].clone(); // `delivered` builds exactly one entry
        let result = delivery.commit(commit).await.map_err(EngineError::from);
        self.note_fenced(region.as_deref(), &result);
        result.map(|()| written)
    }

    /// Gives `commit` its id and fence; returns the region it is about.
    fn prepare(&self, commit: &mut Commit) -> Option<String> {
        commit.id.get_or_insert_with(crate::ports::store::new_commit_id);
        let region = commit_region(commit);
        if commit.fence.is_none() {
            commit.fence = self.fence(region.as_deref());
        }
        region
    }

    fn note_fenced(&self, region: Option<&str>, result: &Result<(), EngineError>) {
        if let Err(e) = result
            && e.is_fenced()
        {
            self.lost(region, e);
        }
    }

    /// Notes that another instance holds `region`'s lease now.
    pub(super) fn lost(&self, region: Option<&str>, why: &EngineError) {
        tracing::warn!(region = region.unwrap_or("-"), error = %why, "region left to the instance that holds its lease");
        if let Some(o) = &self.ownership {
            o.lost(region);
        }
    }
}

/// The region a commit is about (`None` inside: bad names). A commit is about one region:
/// its ledger entries and streams all belong to it.
fn commit_region(commit: &Commit) -> Option<String> {
    commit
        .ledger
        .first()
        .map(|e| e.region().map(str::to_string))
        .or_else(|| commit.streams.first().map(|s| Some(s.region.clone())))
        .flatten()
}
