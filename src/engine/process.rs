//! Processing one file: validate it completely, then deliver its records.
//!
//! Invariant: nothing of a file is delivered before a full validation pass found no
//! file-level fault, and the delivery pass must read the same bytes (same sha256) or it is
//! abandoned — so a file that changes while being read is never half-applied.

use super::retry::retry_transient;
use super::{Engine, EngineError};
use crate::core::ledger::{FileState, LedgerEntry, Listed, interrupted_conflict};
use crate::core::name::FileName;
use crate::core::parse::{FileParser, FileSummary, Line, ParseError, Validation};
use crate::core::record::{Record, Reject, Tally};
use crate::ports::delivery::FileDelivery;
use crate::ports::source::SourceError;
use crate::ports::store::{Commit, FileTicket};
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;
use tokio_util::sync::CancellationToken;

/// Records handed to the delivery at a time.
const BATCH_RECORDS: usize = 500;
/// Batches buffered between the parser thread and the delivery.
const BATCHES_IN_FLIGHT: usize = 8;

/// A file that is ready to be committed.
pub enum FileOutcome {
    /// Its records are delivered; `finish` the delivery with a commit carrying `entry`.
    Delivered { delivery: Box<dyn FileDelivery>, entry: LedgerEntry },
    /// A file-level fault; `entry` is quarantined with the reason.
    Quarantined { entry: LedgerEntry },
}

struct Chunk {
    records: Vec<Record>,
    rejects: Vec<Reject>,
}

fn read_failed(listed: &Listed, e: impl std::fmt::Display) -> EngineError {
    EngineError::Source(SourceError::Unavailable { location: listed.key.clone(), detail: e.to_string() })
}

impl Engine {
    /// Validates and delivers one file (retrying transient failures); the caller commits.
    pub async fn process_file(
        &self,
        entry: &LedgerEntry,
        listed: &Listed,
        cancel: &CancellationToken,
    ) -> Result<FileOutcome, EngineError> {
        let Some(file) = entry.batch.clone() else {
            return Err(EngineError::Operator(format!("{} is not a batch file name", entry.name)));
        };
        if let Some(problem) = &listed.problem {
            if entry.state == FileState::Pending && entry.sha256.is_some() {
                // A delivery of its content started: keep that known until the object can
                // be read again (or is replaced, then judged as a conflict).
                return Err(EngineError::Source(SourceError::Invalid {
                    location: listed.key.clone(),
                    detail: format!("{problem}, while a delivery of its earlier content is unfinished"),
                }));
            }
            let mut after = entry.clone();
            after.state = FileState::Quarantined;
            after.reason = Some(format!("unreadable object: {problem}"));
            after.fingerprint = listed.fingerprint.clone();
            after.updated_at = self.clock.now();
            return Ok(FileOutcome::Quarantined { entry: after });
        }
        let validation = retry_transient("validating a file", cancel, || self.validate(&file, listed)).await?;
        let mut after = entry.clone();
        after.sha256 = Some(validation.summary.sha256.clone());
        after.size = validation.summary.size;
        after.record_lines = validation.summary.record_lines;
        after.updated_at = self.clock.now();
        if let Some(fault) = validation.fault {
            after.state = FileState::Quarantined;
            after.reason = Some(fault.to_string());
            return Ok(FileOutcome::Quarantined { entry: after });
        }
        let expected = validation.summary;
        let reapply = entry.state.is_processed();
        // A pending entry with a digest is a delivery that started and stopped half-way.
        let started = (entry.state == FileState::Pending).then_some(entry.sha256.as_deref()).flatten();
        match started {
            // The same content: resume under the same generation, so the receipts of the
            // interrupted attempt still count.
            Some(sha) if sha == expected.sha256 => after.generation = entry.generation,
            // Different content under the same fingerprint (a copy that kept the mtime and
            // size): the earlier content may be partly applied, so this is a conflict.
            Some(sha) => {
                let conflict = interrupted_conflict(entry, sha, &expected.sha256, listed, self.clock.now());
                return Ok(FileOutcome::Quarantined { entry: conflict });
            }
            None => {
                after.generation = entry.generation.saturating_add(1);
                if entry.state == FileState::Pending && self.partial_effects_possible() {
                    self.record_delivery_start(&after, cancel).await?;
                }
            }
        }
        let generation = after.generation;
        let delivery = retry_transient("delivering a file", cancel, || {
            self.deliver(&file, listed, (reapply, generation), &expected, cancel)
        })
        .await?;
        after.state = if self.delivery.asynchronous() { FileState::Delivered } else { FileState::Applied };
        // What the stores never see: the lines of types the layout does not apply.
        after.tally = Tally { ignored: expected.ignored_lines(), ..Tally::default() };
        if !expected.ignored.is_empty() {
            let per_type: Vec<String> = expected.ignored.iter().map(|(t, n)| format!("{t} {n}")).collect();
            tracing::info!(ignored = %per_type.join(", "), "lines of record types the layout does not apply");
        }
        after.reason = None;
        Ok(FileOutcome::Delivered { delivery, entry: after })
    }

    /// Whether a delivery that stops half-way can leave effects behind: records handed to
    /// a broker, or a store that writes a file step by step.
    fn partial_effects_possible(&self) -> bool {
        self.delivery.asynchronous() || !self.store.atomic_files()
    }

    /// Records which content (sha256) and generation a pending file's delivery is about to
    /// deliver, before its first record goes out: a later upload with other content is
    /// then a visible conflict instead of being mixed with what was already applied.
    async fn record_delivery_start(
        &self,
        starting: &LedgerEntry,
        cancel: &CancellationToken,
    ) -> Result<(), EngineError> {
        let mut intent = starting.clone();
        intent.state = FileState::Pending;
        intent.reason = None;
        let commit = Commit { ledger: vec![intent], fence: self.fence(starting.region()), ..Default::default() };
        self.commit(commit, cancel).await
    }

    async fn validate(&self, file: &FileName, listed: &Listed) -> Result<Validation, EngineError> {
        let reader = SyncIoBridge::new(self.source.open(listed).await?);
        let (file, layout) = (file.clone(), self.layouts.for_kind(&file.kind).clone());
        tokio::task::spawn_blocking(move || FileParser::new(reader, &file, layout).validate())
            .await
            .map_err(|e| read_failed(listed, e))?
            .map_err(|e| read_failed(listed, e))
    }

    async fn deliver(
        &self,
        file: &FileName,
        listed: &Listed,
        (reapply, generation): (bool, u32),
        expected: &FileSummary,
        cancel: &CancellationToken,
    ) -> Result<Box<dyn FileDelivery>, EngineError> {
        let reader = SyncIoBridge::new(self.source.open(listed).await?);
        // The parser starts first and fills its bounded queue while the delivery opens
        // (a store may make the file wait for its turn).
        let (tx, mut rx) = mpsc::channel::<Chunk>(BATCHES_IN_FLIGHT);
        let (parse_file, layout) = (file.clone(), self.layouts.for_kind(&file.kind).clone());
        let parser = tokio::task::spawn_blocking(move || parse_into(reader, &parse_file, layout, tx));
        let ticket = FileTicket {
            file: file.clone(),
            key: listed.key.clone(),
            reapply,
            record_lines: expected.record_lines,
            generation,
        };
        let mut delivery = self.delivery.open(ticket).await?;
        while let Some(chunk) = rx.recv().await {
            if cancel.is_cancelled() {
                return Err(EngineError::Cancelled); // dropping the delivery discards the file
            }
            if !chunk.rejects.is_empty() {
                delivery.reject(chunk.rejects).await?;
            }
            if !chunk.records.is_empty() {
                delivery.send(chunk.records).await?;
            }
            self.heartbeat.beat();
        }
        let summary = match parser.await.map_err(|e| read_failed(listed, e))? {
            Ok(summary) => summary,
            Err(ParseError::Read(e)) => return Err(read_failed(listed, e)),
            Err(ParseError::Fault(_)) => return Err(SourceError::Changed { location: listed.key.clone() }.into()),
        };
        if summary.sha256 != expected.sha256 {
            return Err(SourceError::Changed { location: listed.key.clone() }.into());
        }
        Ok(delivery)
    }
}

/// The parser thread: reads lines and sends them in bounded batches.
fn parse_into(
    reader: impl std::io::Read,
    file: &FileName,
    layout: std::sync::Arc<crate::core::schema::Layout>,
    tx: mpsc::Sender<Chunk>,
) -> Result<FileSummary, ParseError> {
    let mut parser = FileParser::new(reader, file, layout);
    let fresh = || Chunk { records: Vec::with_capacity(BATCH_RECORDS), rejects: Vec::new() };
    let mut chunk = fresh();
    let gone = || ParseError::Read(std::io::Error::other("the delivery stopped"));
    while let Some(line) = parser.next_line()? {
        match line {
            Line::Record(r) => chunk.records.push(r),
            Line::Reject(r) => chunk.rejects.push(r),
            Line::Ignored { .. } => {} // counted in the file's summary
        }
        if chunk.records.len() + chunk.rejects.len() >= BATCH_RECORDS {
            tx.blocking_send(std::mem::replace(&mut chunk, fresh())).map_err(|_| gone())?;
        }
    }
    if !chunk.records.is_empty() || !chunk.rejects.is_empty() {
        tx.blocking_send(chunk).map_err(|_| gone())?;
    }
    parser.finish()
}
