//! The one door for writes that change a stream or the ledger.
//!
//! Invariant: every such write — a pass's discoveries and files, a delivery's start, a
//! broker file's completion, a backfill, an operator's skip — reaches the store through
//! [`Engine::commit`] or [`Engine::commit_delivery`] (a file, or several in one unit of
//! work: [`Engine::commit_file`], `engine::group`). They give the commit its idempotency id
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
use crate::core::full::{Sweep, Swept};
use crate::core::ledger::{FileState, LedgerEntry};
use crate::core::record::Tally;
use crate::core::sequencer::StreamRecord;
use crate::ports::delivery::FileDelivery;
use crate::ports::store::{AuditEntry, Commit, CounterDelta};
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
        if written.is_ok() {
            self.known.confirmed(commit.ledger.iter().map(|e| (&e.name, &e.fingerprint)));
        }
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
        let mut commit = self.settle_file(&mut *delivery, entry).await?;
        let written = commit.ledger[0].clone(); // `delivered` builds exactly one entry
        commit.streams = streams;
        self.commit_delivery(delivery, commit).await?;
        Ok(written)
    }

    /// Settles the current file of `delivery` and sweeps after it: the commit that would
    /// complete it (one ledger entry), not written yet.
    pub(super) async fn settle_file(
        &self,
        delivery: &mut dyn FileDelivery,
        entry: LedgerEntry,
    ) -> Result<Commit, EngineError> {
        let mut tally = delivery.settle().await?;
        tally.ignored = entry.tally.ignored; // set from the file's summary
        let mut audit = Vec::new();
        if let Some(sweep) = self.sweep_for(&entry)
            && let Some(swept) = delivery.sweep(&sweep).await?
        {
            tally.removed = swept.removed;
            audit = self.sweep_audit(&sweep, swept);
        }
        let mut commit = delivered(entry, tally);
        commit.audit = audit;
        Ok(commit)
    }

    /// Writes `commit` through `delivery`: the files it settled, in one transaction with
    /// their records where the store has them. Not retried (see [`Engine::commit_file`]).
    pub(super) async fn commit_delivery(
        &self,
        delivery: Box<dyn FileDelivery>,
        mut commit: Commit,
    ) -> Result<(), EngineError> {
        let region = self.prepare(&mut commit);
        // Only what the known names need outlives the commit handed to the delivery.
        let names: Vec<(String, String)> =
            commit.ledger.iter().map(|e| (e.name.clone(), e.fingerprint.clone())).collect();
        let result = delivery.commit(commit).await.map_err(EngineError::from);
        self.note_fenced(region.as_deref(), &result);
        if result.is_ok() {
            self.known.confirmed(names.iter().map(|(n, f)| (n, f)));
        }
        result
    }

    /// The sweep that follows applying `entry`'s records (`core::full`).
    pub(super) fn sweep_for(&self, entry: &LedgerEntry) -> Option<Sweep> {
        let file = entry.batch.as_ref()?;
        Some(self.full_files.sweep_for(file, entry.generation, self.layouts.for_kind(&file.kind)))
    }

    /// What a sweep did, for the audit log (nothing when it did nothing).
    pub(super) fn sweep_audit(&self, s: &Sweep, swept: Swept) -> Vec<AuditEntry> {
        let entry = |action: &str, detail: String| {
            tracing::info!(region = %s.region, file = %s.file, "{detail}");
            AuditEntry {
                at: self.clock.now(),
                actor: "esr-ingest".into(),
                action: action.into(),
                region: Some(s.region.clone()),
                seq: Some(s.version.seq),
                detail,
            }
        };
        let mut out = Vec::new();
        if swept.removed > 0 {
            out.push(match s.full {
                Some(_) => entry(
                    "full file",
                    format!(
                        "{}: {} record(s) of {} absent from the full file became tombstones",
                        s.file, swept.removed, s.region
                    ),
                ),
                None => entry(
                    "full file",
                    format!(
                        "{}: {} record(s) it brought back are older than {}'s latest full file and became tombstones",
                        s.file, swept.removed, s.region
                    ),
                ),
            });
        }
        if swept.reported > 0 {
            out.push(entry(
                "full file (report)",
                format!(
                    "{}: {} live record(s) of {} are absent from the full file; kept (full_files mode report)",
                    s.file, swept.reported, s.region
                ),
            ));
        }
        out
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
