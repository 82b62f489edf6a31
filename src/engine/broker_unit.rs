//! A region's consecutive ready files delivered to a broker together.
//!
//! A broker's consumers apply records as they arrive, so nothing of a file may go out
//! before a validation of the whole file found no file-level fault (`engine::process`).
//! An in-process unit (`engine::group`) reads each file once and discards itself on a
//! fault, because nothing of it is visible before its commit; a broker unit instead
//! validates each file before it goes out and ends before the first one that is not ready
//! (a fault, an object it cannot read, lines too many to keep, an intent not written):
//! that file goes the one-file way. The next file is validated while the current one is
//! published.
//!
//! What a unit saves is round trips, which bound how fast a region's files go out (each
//! waits for the one before it): one broker channel for all of them, and one commit of
//! every file's ledger entry with the stream's advance, instead of a channel and a commit
//! per file. The consumers also receive a region's files in a row, so their transactions
//! touch fewer pages.
//!
//! Invariants:
//! - A file's records go out only once its whole validation passed and its intent
//!   (content and generation) is durable; what goes out is exactly the lines its
//!   validation kept. Its intent is written only once the file before it is settled, so
//!   at most one file of a unit counts as started without being whole at the broker.
//! - Each file is settled (every message confirmed) before the next one starts, and gets
//!   the ledger entry and counts it would get alone; the unit's commit writes them all
//!   with the stream's advance, or nothing.
//! - When a file cannot be delivered, or the shutdown stops the unit, the files settled
//!   before it are committed as they are (with the stream's advance up to them). After a
//!   failure the region waits for a later pass, as a file deferred on the one-file way
//!   does: that pass (or after a shutdown, the next start) reads the intent back from the
//!   store and resumes the file under the same generation, whose receipts still count.
//!   At a shutdown (also when a file fails once it is under way) that commit has
//!   [`SHUTDOWN_COMMIT_LIMIT`] and does not watch the cancelled token. When the unit's commit
//!   fails (perhaps after taking effect), the region waits too.
//! - A unit holds the kept lines of two files at most (the one going out, the next one),
//!   and is bounded like an in-process unit ([`Taken`]): bytes of objects, time open,
//!   and [`Delivery::group_lines`] lines.
//!
//! [`Delivery::group_lines`]: crate::ports::delivery::Delivery::group_lines

use super::group::{Grouped, InUnit, Taken, UnitOrder, file_span, joins_a_unit};
use super::process::{KEEP_BYTES, Parsing, Ready};
use super::{Engine, EngineError, PassReport};
use crate::core::ledger::{LedgerEntry, Listed};
use crate::core::sequencer::Apply;
use crate::ports::delivery::FileDelivery;
use crate::ports::source::SourceError;
use crate::ports::store::Commit;
use std::collections::{BTreeMap, HashMap};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How long a shutdown waits for the commit of a unit's settled files (a store that does
/// not answer must not hold the shutdown: the next start resumes the files instead).
const SHUTDOWN_COMMIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A file validated for the unit, waiting for its intent and its turn to go out.
struct Checked<'a, O> {
    action: Apply,
    ready: Ready,
    parsing: Parsing,
    listed: &'a Listed,
    /// The order once the file is applied.
    after: O,
}

/// What a unit has settled and not yet committed.
struct Settled<O> {
    commit: Commit,
    files: Vec<InUnit>,
    /// The order after the last file settled.
    plan: O,
}

impl Engine {
    /// Delivers the stream's next ready files, at most `most` of them, as one unit (see
    /// the module docs). `Alone` when the first file is not ready for it.
    pub(super) async fn deliver_unit<O: UnitOrder>(
        &self,
        stream: &mut O,
        (objects, ledger): (&BTreeMap<String, Listed>, &mut HashMap<String, LedgerEntry>),
        most: usize,
        report: &mut PassReport,
        cancel: &CancellationToken,
    ) -> Result<Grouped, EngineError> {
        let region = stream.region().to_string();
        let mut taken = Taken::new(most);
        let mut plan = stream.clone();
        let first = self.validate_next(&mut plan, (objects, &*ledger), &mut taken, cancel).await?;
        let mut current = match first {
            Some(first) if self.write_intent(&first, cancel).await? => first,
            _ => return Ok(Grouped::Alone), // nothing went out: the one-file way takes it
        };
        let mut delivery: Option<Box<dyn FileDelivery>> = None;
        let mut settled = Settled { commit: Commit::default(), files: Vec::new(), plan: stream.clone() };
        loop {
            let Checked { action, ready, parsing, listed, after } = current;
            let out = async {
                let into = self.open_or_next(&mut delivery, self.ticket(&ready, listed)).await?;
                if let Err(fault) = self.pump(into, parsing, listed, cancel).await? {
                    // The kept lines were validated: a fault here is a broken promise.
                    let detail = format!("kept lines no longer valid: {fault}");
                    return Err(SourceError::Invalid { location: listed.key.clone(), detail }.into());
                }
                self.settle_file(into, self.delivered_entry(ready)).await
            }
            .instrument(file_span(&region, &action));
            let next = self.validate_next(&mut plan, (objects, &*ledger), &mut taken, cancel);
            let (out, next) = tokio::join!(out, next);
            match out {
                Ok(commit) => {
                    let entry = commit.ledger[0].clone(); // `settle_file` builds exactly one entry
                    settled.commit.absorb(commit);
                    settled.files.push(InUnit { action, entry, next_seq: after.next_seq() });
                    settled.plan = after;
                    self.heartbeat.beat();
                }
                Err(EngineError::Cancelled) => return self.unit_stopped(stream, settled, (ledger, report)).await,
                // A file that fails once the shutdown is under way: the settled files are
                // committed as at any shutdown (not under the cancelled token, which would
                // leave them to be sent again); the failed file resumes at the next start.
                Err(error) if cancel.is_cancelled() => {
                    tracing::warn!(region = %region, file = %action.name, error = %error,
                        "file of a unit not delivered at the shutdown; the next start resumes it");
                    return self.unit_stopped(stream, settled, (ledger, report)).await;
                }
                Err(error) => {
                    tracing::warn!(region = %region, file = %action.name, error = %error,
                        "file of a unit not delivered; the files settled before it are committed, the region waits for a later pass");
                    return self.unit_deferred(stream, settled, (action.name, error), (ledger, report), cancel).await;
                }
            }
            // The next file's intent only now that this one is settled: a file counts as
            // started only once every file before it went out whole.
            let intent = match next {
                Ok(Some(next)) => self.write_intent(&next, cancel).await.map(|written| written.then_some(next)),
                other => other,
            };
            current = match intent {
                Ok(Some(next)) => next,
                Ok(None) => break,
                Err(EngineError::Cancelled) => return self.unit_stopped(stream, settled, (ledger, report)).await,
                Err(e) => return Err(e),
            };
        }
        let Some(delivery) = delivery else { return Ok(Grouped::Alone) }; // a file went out
        let Settled { mut commit, files, plan } = settled;
        let first = files.first().map(|f| f.action.name.clone()).unwrap_or_default();
        commit.streams = plan.records();
        match self.commit_delivery(delivery, commit).await {
            Ok(()) => {}
            Err(e) if matches!(e, EngineError::Cancelled) || e.is_fenced() => return Err(e),
            // As on the one-file way, any other refusal ends the pass.
            Err(e) if !e.is_transient() && !e.is_superseded() => return Err(e),
            Err(error) => {
                // The commit may have taken effect with its reply lost: only the store
                // knows, and a later pass reads it back.
                tracing::warn!(region = %region, files = files.len(), error = %error,
                    "unit of files not committed; the region waits for a later pass, which resumes their deliveries");
                return Ok(Grouped::Deferred { file: first, error });
            }
        }
        self.applied_unit(stream, plan, files, ledger, report);
        Ok(Grouped::Applied)
    }

    /// A unit whose file `file` could not be delivered: the files settled before it are
    /// committed (with the stream's advance up to them), and the region waits for a later
    /// pass, which reads the intent written back from the store.
    async fn unit_deferred<O: UnitOrder>(
        &self,
        stream: &mut O,
        settled: Settled<O>,
        (file, error): (String, EngineError),
        (ledger, report): (&mut HashMap<String, LedgerEntry>, &mut PassReport),
        cancel: &CancellationToken,
    ) -> Result<Grouped, EngineError> {
        self.commit_settled(stream, settled, (ledger, report), cancel).await?;
        // As on the one-file way: only a transient error or one of the file's own object
        // defers it; any other ends the pass.
        if error.is_transient() || matches!(error, EngineError::Source(_)) {
            Ok(Grouped::Deferred { file, error })
        } else {
            Err(error)
        }
    }

    /// A unit stopped by the shutdown: the files it settled went out whole and confirmed,
    /// so they are committed (with the stream's advance up to them) before the
    /// cancellation goes on; without that, the next start would publish them again. That
    /// commit does not watch the cancelled token; it has [`SHUTDOWN_COMMIT_LIMIT`] instead,
    /// after which the next start resumes the files, as before.
    async fn unit_stopped<O: UnitOrder>(
        &self,
        stream: &mut O,
        settled: Settled<O>,
        (ledger, report): (&mut HashMap<String, LedgerEntry>, &mut PassReport),
    ) -> Result<Grouped, EngineError> {
        if !settled.files.is_empty() {
            let (region, files) = (stream.region().to_string(), settled.files.len());
            tracing::info!(region = %region, files, "shutdown inside a unit of files: committing the files it settled");
            let uncancelled = CancellationToken::new();
            let commit = self.commit_settled(stream, settled, (ledger, report), &uncancelled);
            match tokio::time::timeout(SHUTDOWN_COMMIT_LIMIT, commit).await {
                Ok(committed) => committed?,
                Err(_) => tracing::warn!(region = %region, files, limit = ?SHUTDOWN_COMMIT_LIMIT,
                    "files settled in a unit not committed at the shutdown; the next start resumes them"),
            }
        }
        Err(EngineError::Cancelled)
    }

    /// Commits the files a unit settled, if any, with the stream's advance up to them. A
    /// commit refused for another reason than a cancellation or a lost lease is logged:
    /// the files are resumed by a later pass, under the same generations.
    async fn commit_settled<O: UnitOrder>(
        &self,
        stream: &mut O,
        settled: Settled<O>,
        (ledger, report): (&mut HashMap<String, LedgerEntry>, &mut PassReport),
        cancel: &CancellationToken,
    ) -> Result<(), EngineError> {
        if settled.files.is_empty() {
            return Ok(());
        }
        let Settled { mut commit, files, plan } = settled;
        commit.streams = plan.records();
        match self.commit(commit, cancel).await {
            Ok(()) => self.applied_unit(stream, plan, files, ledger, report),
            Err(e) if matches!(e, EngineError::Cancelled) || e.is_fenced() => return Err(e),
            Err(e) => tracing::warn!(region = %stream.region(), error = %e, "files settled in a unit not committed"),
        }
        Ok(())
    }

    /// The next file the unit takes, validated (advancing `plan` past it); `None` when
    /// the unit ends before it (a bound, or a file not ready for a unit).
    async fn validate_next<'a, O: UnitOrder>(
        &self,
        plan: &mut O,
        (objects, ledger): (&'a BTreeMap<String, Listed>, &HashMap<String, LedgerEntry>),
        taken: &mut Taken,
        cancel: &CancellationToken,
    ) -> Result<Option<Checked<'a, O>>, EngineError> {
        let Some(action) = plan.next_action() else { return Ok(None) };
        let (Some(entry), Some(listed)) = (ledger.get(&action.name), objects.get(&action.name)) else {
            return Ok(None);
        };
        if !joins_a_unit(entry, listed)
            || listed.size > KEEP_BYTES
            || !taken.room_for(listed.size, self.delivery.group_lines())
        {
            return Ok(None);
        }
        let span = file_span(plan.region(), &action);
        let (ready, parsing) = match self.check_for_unit(entry, listed, cancel).instrument(span.clone()).await {
            Ok(Some(ready)) => ready,
            Ok(None) => return Ok(None), // a fault: the one-file way quarantines it
            Err(EngineError::Cancelled) => return Err(EngineError::Cancelled),
            Err(e) => {
                span.in_scope(|| tracing::info!(error = %e, "file left out of a unit; it goes the one-file way"));
                return Ok(None);
            }
        };
        taken.took(listed.size, ready.record_lines());
        plan.applied(&action.name, action.seq);
        Ok(Some(Checked { action, ready, parsing, listed, after: plan.clone() }))
    }

    /// Writes the intent of a validated file, if it needs one; `false` when it could not
    /// be written (nothing of the file goes out in this unit: the one-file way writes it
    /// again, under the same generation).
    async fn write_intent<O: UnitOrder>(
        &self,
        file: &Checked<'_, O>,
        cancel: &CancellationToken,
    ) -> Result<bool, EngineError> {
        let Some(intent) = file.ready.intent() else { return Ok(true) };
        let span = file_span(file.after.region(), &file.action);
        match self.commit_intent(intent, cancel).instrument(span.clone()).await {
            Ok(()) => {
                self.heartbeat.beat();
                Ok(true)
            }
            Err(e) if matches!(e, EngineError::Cancelled) || e.is_fenced() => Err(e),
            Err(e) => {
                span.in_scope(|| tracing::warn!(error = %e, "intent not written; the file goes the one-file way"));
                Ok(false)
            }
        }
    }
}
