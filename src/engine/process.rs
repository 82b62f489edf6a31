//! Processing one file: validate it completely, then deliver its records.
//!
//! Invariant: nothing of a file is delivered before a full validation pass found no
//! file-level fault, and the delivery pass must read the same bytes (same sha256) or it is
//! abandoned — so a file that changes while being read is never half-applied. A file of
//! at most [`KEEP_BYTES`] keeps the lines its validation pass built and delivers exactly
//! those, without a second read (a retried delivery reads it again, under the same
//! check). (In a unit of work of several files, nothing is visible before the commit, so
//! a file is read once and a fault discards the unit: `engine::group`.)

use super::retry::retry_transient;
use super::{Engine, EngineError};
use crate::core::ledger::{FileState, LedgerEntry, Listed, interrupted_conflict};
use crate::core::name::FileName;
use crate::core::parse::{FileFault, FileParser, FileSummary, Line, ParseError, Validation};
use crate::core::record::{Record, Reject, Tally};
use crate::ports::delivery::FileDelivery;
use crate::ports::source::SourceError;
use crate::ports::store::{Commit, FileTicket};
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;
use tokio_util::sync::CancellationToken;

/// Records handed to the delivery at a time.
const BATCH_RECORDS: usize = 500;
/// A file of at most this many bytes keeps its lines from the validation pass (a few MB
/// of records while it waits for its delivery) instead of being read a second time.
pub(super) const KEEP_BYTES: u64 = 1 << 20;
/// What the kept lines of one file may hold in memory (see `held_size`); past it they are
/// dropped and the file is read again for its delivery.
const KEPT_AT_MOST: u64 = 4 * KEEP_BYTES;
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

/// A file being read again for its delivery (see [`Engine::start_parsing`]). Dropping it
/// stops the parser thread at its next batch.
pub(super) struct Parsing {
    rx: mpsc::Receiver<Chunk>,
    parser: tokio::task::JoinHandle<Result<FileSummary, ParseError>>,
}

impl Parsing {
    /// The lines a validation pass kept, handed out like a parser's (bounded queue).
    fn kept(chunks: Vec<Chunk>, summary: FileSummary) -> Self {
        let (tx, rx) = mpsc::channel::<Chunk>(BATCHES_IN_FLIGHT);
        let parser = tokio::spawn(async move {
            for chunk in chunks {
                if tx.send(chunk).await.is_err() {
                    return Err(ParseError::Read(std::io::Error::other("the delivery stopped")));
                }
            }
            Ok(summary)
        });
        Parsing { rx, parser }
    }
}

fn read_failed(listed: &Listed, e: impl std::fmt::Display) -> EngineError {
    EngineError::Source(SourceError::Unavailable { location: listed.key.clone(), detail: e.to_string() })
}

/// A file whose validation found no file-level fault: what its delivery needs.
pub(super) struct Ready {
    file: FileName,
    /// Its ledger entry as it will be committed (state and tally set at delivery).
    after: LedgerEntry,
    expected: FileSummary,
    reapply: bool,
    /// The lines the validation pass built, in batches (a small file only).
    kept: Option<Vec<Chunk>>,
}

impl Ready {
    /// The intent a delivery of it records before its first record goes out, when it
    /// needs one (see [`delivery_intent`]): a pending file's. A file applied before and
    /// applied again needs none.
    pub(super) fn intent(&self) -> Option<LedgerEntry> {
        (self.after.state == FileState::Pending).then(|| delivery_intent(&self.after))
    }

    /// Its record lines, as the validation counted them.
    pub(super) fn record_lines(&self) -> u64 {
        self.expected.record_lines
    }
}

/// The ledger entry that records which content (sha256) and generation the delivery of
/// `starting` (validated, with its next generation) is about to deliver: pending, with
/// them set. Read back, it is the file's unfinished delivery
/// ([`LedgerEntry::unfinished_delivery`]).
fn delivery_intent(starting: &LedgerEntry) -> LedgerEntry {
    let mut intent = starting.clone();
    intent.state = FileState::Pending;
    intent.reason = None;
    intent
}

/// What the validation of a file decided.
pub(super) enum Checked {
    Ready(Ready),
    /// A file-level fault; the entry is quarantined with the reason.
    Quarantined(LedgerEntry),
}

impl Engine {
    /// Validates and delivers one file (retrying transient failures); the caller commits.
    pub async fn process_file(
        &self,
        entry: &LedgerEntry,
        listed: &Listed,
        cancel: &CancellationToken,
    ) -> Result<FileOutcome, EngineError> {
        let mut ready = match self.check_file(entry, listed, cancel).await? {
            Checked::Ready(ready) => ready,
            Checked::Quarantined(entry) => return Ok(FileOutcome::Quarantined { entry }),
        };
        // The lines the validation kept serve the first attempt that opens the delivery; a
        // later attempt reads the file again.
        let kept = std::sync::Mutex::new(ready.kept.take());
        let kept_lines = || kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let delivery = retry_transient("delivering a file", cancel, || async {
            let taken = kept_lines().take();
            let (parsing, mut delivery) = match taken {
                Some(chunks) => match self.delivery.open(self.ticket(&ready, listed)).await {
                    Ok(delivery) => (Parsing::kept(chunks, ready.expected.clone()), delivery),
                    Err(e) => {
                        *kept_lines() = Some(chunks); // for the next attempt
                        return Err(e.into());
                    }
                },
                None => {
                    // The parser starts first and fills its bounded queue while the delivery
                    // opens (a store may make the file wait for its turn).
                    let parsing = self.start_parsing(&ready.file, listed).await?;
                    (parsing, self.delivery.open(self.ticket(&ready, listed)).await?)
                }
            };
            match self.pump(&mut *delivery, parsing, listed, cancel).await? {
                Ok(summary) if summary.sha256 == ready.expected.sha256 => Ok(delivery),
                // Not the bytes validated: the object changed meanwhile.
                _ => Err(SourceError::Changed { location: listed.key.clone() }.into()),
            }
        })
        .await?;
        Ok(FileOutcome::Delivered { delivery, entry: self.delivered_entry(ready) })
    }

    pub(super) fn ticket(&self, ready: &Ready, listed: &Listed) -> FileTicket {
        FileTicket {
            file: ready.file.clone(),
            key: listed.key.clone(),
            reapply: ready.reapply,
            record_lines: ready.expected.record_lines,
            generation: ready.after.generation,
            together: false,
        }
    }

    /// The entry of a file whose records are delivered: applied, or delivered to a broker.
    pub(super) fn delivered_entry(&self, ready: Ready) -> LedgerEntry {
        let Ready { mut after, expected, .. } = ready;
        after.state = if self.delivery.asynchronous() { FileState::Delivered } else { FileState::Applied };
        // What the stores never see: the lines of types the layout does not apply.
        after.tally = Tally { ignored: expected.ignored_lines(), ..Tally::default() };
        if !expected.ignored.is_empty() {
            let per_type: Vec<String> = expected.ignored.iter().map(|(t, n)| format!("{t} {n}")).collect();
            tracing::info!(ignored = %per_type.join(", "), "lines of record types the layout does not apply");
        }
        after.reason = None;
        after
    }

    /// Validates a file completely (retrying transient failures) and decides whether it
    /// can be delivered, and under which generation.
    pub(super) async fn check_file(
        &self,
        entry: &LedgerEntry,
        listed: &Listed,
        cancel: &CancellationToken,
    ) -> Result<Checked, EngineError> {
        let file = super::group::file_of(entry)?.clone();
        if let Some(problem) = &listed.problem {
            if entry.unfinished_delivery().is_some() {
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
            return Ok(Checked::Quarantined(after));
        }
        let (validation, kept) = retry_transient("validating a file", cancel, || self.validate(&file, listed)).await?;
        let mut after = self.read_entry(entry, &validation.summary);
        if let Some(fault) = validation.fault {
            after.state = FileState::Quarantined;
            after.reason = Some(fault.to_string());
            return Ok(Checked::Quarantined(after));
        }
        let expected = validation.summary;
        let reapply = entry.state.is_processed();
        match entry.unfinished_delivery() {
            // The same content: resume under the same generation, so the receipts of the
            // interrupted attempt still count.
            Some(sha) if sha == expected.sha256 => after.generation = entry.generation,
            // Different content under the same fingerprint (a copy that kept the mtime and
            // size): the earlier content may be partly applied, so this is a conflict.
            Some(sha) => {
                let conflict = interrupted_conflict(entry, sha, &expected.sha256, listed, self.clock.now());
                return Ok(Checked::Quarantined(conflict));
            }
            None => {
                after.generation = entry.generation.saturating_add(1);
                if entry.state == FileState::Pending && self.partial_effects_possible() {
                    self.record_delivery_start(&after, cancel).await?;
                }
            }
        }
        Ok(Checked::Ready(Ready { file, after, expected, reapply, kept }))
    }

    /// `entry` with what a complete read of its object established.
    fn read_entry(&self, entry: &LedgerEntry, summary: &FileSummary) -> LedgerEntry {
        let mut after = entry.clone();
        after.sha256 = Some(summary.sha256.clone());
        after.size = summary.size;
        after.record_lines = summary.record_lines;
        after.updated_at = self.clock.now();
        after
    }

    /// A file read once, while its records went into a unit of work of several files,
    /// without a fault: ready as a validated file would be. Only for a file with no
    /// unfinished delivery (see [`Engine::check_file`]).
    pub(super) fn read_once(&self, entry: &LedgerEntry, file: FileName, summary: FileSummary) -> Ready {
        let mut after = self.read_entry(entry, &summary);
        after.generation = entry.generation.saturating_add(1);
        Ready { file, after, expected: summary, reapply: entry.state.is_processed(), kept: None }
    }

    /// Whether a delivery that stops half-way can leave effects behind: records handed to
    /// a broker, or a store that writes a file step by step.
    pub(super) fn partial_effects_possible(&self) -> bool {
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
        self.commit_intent(delivery_intent(starting), cancel).await
    }

    /// Commits an intent (see [`delivery_intent`]) under its region's fence.
    pub(super) async fn commit_intent(
        &self,
        intent: LedgerEntry,
        cancel: &CancellationToken,
    ) -> Result<(), EngineError> {
        let fence = self.fence(intent.region());
        self.commit(Commit { ledger: vec![intent], fence, ..Default::default() }, cancel).await
    }

    /// Validates a file for a unit of files delivered to a broker (`engine::broker_unit`):
    /// ready to deliver the lines its validation kept, or `None` when it must go the
    /// one-file way (a file-level fault, or lines too many to keep). Only for a file with
    /// no unfinished delivery, like [`Engine::read_once`].
    pub(super) async fn check_for_unit(
        &self,
        entry: &LedgerEntry,
        listed: &Listed,
        cancel: &CancellationToken,
    ) -> Result<Option<(Ready, Parsing)>, EngineError> {
        let file = super::group::file_of(entry)?.clone();
        let (validation, kept) = retry_transient("validating a file", cancel, || self.validate(&file, listed)).await?;
        let (None, Some(chunks)) = (validation.fault, kept) else { return Ok(None) };
        let ready = self.read_once(entry, file, validation.summary.clone());
        Ok(Some((ready, Parsing::kept(chunks, validation.summary))))
    }

    /// The validation pass; a file of at most [`KEEP_BYTES`] also keeps its lines, in
    /// batches, when it has no fault.
    async fn validate(
        &self,
        file: &FileName,
        listed: &Listed,
    ) -> Result<(Validation, Option<Vec<Chunk>>), EngineError> {
        let reader = SyncIoBridge::new(self.source.open(listed).await?);
        let (file, layout) = (file.clone(), self.layouts.for_kind(&file.kind).clone());
        let keep = listed.size <= KEEP_BYTES;
        tokio::task::spawn_blocking(move || {
            let (mut batches, mut chunks, mut held, mut keeping) = (Batches::default(), Vec::new(), 0, keep);
            let validation = FileParser::new(reader, &file, layout).validate_keeping(keep, |line| {
                held += held_size(&line);
                if held > KEPT_AT_MOST {
                    // The object is larger than listed (replaced meanwhile): read it again.
                    (keeping, chunks, batches) = (false, Vec::new(), Batches::default());
                } else if keeping {
                    chunks.extend(batches.add(line));
                }
            })?;
            chunks.extend(batches.rest());
            let kept = (keeping && validation.fault.is_none()).then_some(chunks);
            Ok::<_, std::io::Error>((validation, kept))
        })
        .await
        .map_err(|e| read_failed(listed, e))?
        .map_err(|e| read_failed(listed, e))
    }

    /// Starts reading a validated file again, on a parser thread that fills a bounded
    /// queue of record batches.
    pub(super) async fn start_parsing(&self, file: &FileName, listed: &Listed) -> Result<Parsing, EngineError> {
        let reader = SyncIoBridge::new(self.source.open(listed).await?);
        let (tx, rx) = mpsc::channel::<Chunk>(BATCHES_IN_FLIGHT);
        let (parse_file, layout) = (file.clone(), self.layouts.for_kind(&file.kind).clone());
        let parser = tokio::task::spawn_blocking(move || parse_into(reader, &parse_file, layout, tx));
        Ok(Parsing { rx, parser })
    }

    /// Hands a file's records to `delivery` as its parser yields them. Returns what the
    /// complete read established, or the file-level fault it found (records of the file
    /// were handed over before it: the caller discards the delivery).
    pub(super) async fn pump(
        &self,
        delivery: &mut dyn FileDelivery,
        parsing: Parsing,
        listed: &Listed,
        cancel: &CancellationToken,
    ) -> Result<Result<FileSummary, FileFault>, EngineError> {
        let Parsing { mut rx, parser } = parsing;
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
        match parser.await.map_err(|e| read_failed(listed, e))? {
            Ok(summary) => Ok(Ok(summary)),
            Err(ParseError::Read(e)) => Err(read_failed(listed, e)),
            Err(ParseError::Fault(fault)) => Ok(Err(fault)),
        }
    }
}

/// What a kept line holds in memory, about: its text and a fixed cost.
fn held_size(line: &Line) -> u64 {
    let text = match line {
        Line::Record(r) => r.key.len() + r.fields.as_ref().map_or(0, |f| f.values_json.len()),
        Line::Reject(r) => r.raw.len() + r.reason.len(),
        Line::Ignored { .. } => 0,
    };
    (text + std::mem::size_of::<Line>() + 64) as u64 // the line, and its heap blocks' overhead
}

/// Lines gathered into batches of [`BATCH_RECORDS`].
#[derive(Default)]
struct Batches {
    chunk: Option<Chunk>,
}

impl Batches {
    /// Adds a line; returns a batch once one is full.
    fn add(&mut self, line: Line) -> Option<Chunk> {
        let chunk =
            self.chunk.get_or_insert_with(|| Chunk { records: Vec::with_capacity(BATCH_RECORDS), rejects: Vec::new() });
        match line {
            Line::Record(r) => chunk.records.push(r),
            Line::Reject(r) => chunk.rejects.push(r),
            Line::Ignored { .. } => {} // counted in the file's summary
        }
        if chunk.records.len() + chunk.rejects.len() >= BATCH_RECORDS { self.chunk.take() } else { None }
    }

    /// The last batch, if it holds anything.
    fn rest(self) -> Option<Chunk> {
        self.chunk.filter(|c| !c.records.is_empty() || !c.rejects.is_empty())
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
    let mut batches = Batches::default();
    let gone = || ParseError::Read(std::io::Error::other("the delivery stopped"));
    while let Some(line) = parser.next_line()? {
        if let Some(chunk) = batches.add(line) {
            tx.blocking_send(chunk).map_err(|_| gone())?;
        }
    }
    if let Some(chunk) = batches.rest() {
        tx.blocking_send(chunk).map_err(|_| gone())?;
    }
    parser.finish()
}
