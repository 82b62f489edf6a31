//! A region's consecutive ready files in one unit of work.
//!
//! After an outage a region has many files ready in a row, and each day's file updates
//! mostly the same records. Where the delivery allows it ([`Delivery::group_lines`]: the
//! in-process delivery over SQLite; a broker's delivery takes units of its own, whose
//! files are validated first, `engine::broker_unit`), they go into one unit of work: each file is read
//! once (validated while its records go in), the store writes each record once per unit
//! instead of once per line, and the unit commits once.
//!
//! Invariants:
//! - A unit applies exactly the files, in exactly the order, that applying them one at a
//!   time would: the sequencer is advanced on a copy of the stream, file by file, and the
//!   stream itself only after the unit committed.
//! - Each file gets the ledger entry and the counts (applied, stale, unchanged, rejected,
//!   removed) it would get on its own ([`crate::ports::store::FileTxn::next_file`]); the
//!   unit's commit writes them all with the stream's advance, or nothing.
//! - A region's first unit in a pass takes one file, so a process that is stopped often
//!   still commits a file as soon as it would alone; the next ones take as many as the
//!   line budget allows.
//! - Nothing of a unit is visible before its commit, so a file can be read once: when one
//!   has a file-level fault (or cannot be read, or anything else fails), the whole unit is
//!   discarded. The files before it are then applied again as a unit that stops before
//!   it, and it goes the one-file way (validated first, quarantined, deferred or retried
//!   as usual). When the commit itself fails, every file of the unit goes the one-file way.
//! - A unit is bounded: about [`Delivery::group_lines`] lines, [`UNIT_BYTES`] of objects,
//!   and no further file after [`UNIT_TIME`] (the store's single writer waits for it).
//! - The files come in the order a [`UnitOrder`] gives: a region's stream in a pass (the
//!   unit's commit carries the stream's advance), or a backfill's list (no stream moves).
//!
//! [`Delivery::group_lines`]: crate::ports::delivery::Delivery::group_lines

use super::process::{Parsing, Ready};
use super::{Engine, EngineError, PassReport};
use crate::core::ledger::{LedgerEntry, Listed};
use crate::core::name::FileName;
use crate::core::record::Tally;
use crate::core::sequencer::{Apply, Stream, StreamRecord};
use crate::ports::delivery::FileDelivery;
use crate::ports::source::SourceError;
use crate::ports::store::{Commit, FileTicket};
use std::collections::{BTreeMap, HashMap};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Objects larger than this go the one-file way (a large file is staged and merged by the
/// store, which needs its line count up front).
const UNIT_FILE_BYTES: u64 = 8 << 20;
/// A unit takes no further file once its objects add up to this many bytes...
pub(super) const UNIT_BYTES: u64 = 16 << 20;
/// ...or once it has been open this long: the store's writer (lease renewals, other
/// regions, other processes) waits for it, and a crash loses at most this much work.
pub(super) const UNIT_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// How much a unit has taken, against its bounds: at most `most` files and
/// [`Delivery::group_lines`] lines, [`UNIT_BYTES`] of objects (a first file of any size),
/// open for [`UNIT_TIME`]. Both kinds of unit (in-process here, `engine::broker_unit`)
/// ask it before taking a file.
///
/// [`Delivery::group_lines`]: crate::ports::delivery::Delivery::group_lines
pub(super) struct Taken {
    files: usize,
    most: usize,
    lines: u64,
    bytes: u64,
    opened: std::time::Instant,
}

impl Taken {
    pub(super) fn new(most: usize) -> Self {
        Self { files: 0, most, lines: 0, bytes: 0, opened: std::time::Instant::now() }
    }

    /// Whether a further file of `size` bytes may join.
    pub(super) fn room_for(&self, size: u64, group_lines: u64) -> bool {
        self.files < self.most
            && self.lines < group_lines
            && (self.files == 0 || self.bytes + size <= UNIT_BYTES)
            && self.still_open()
    }

    /// Whether the unit has been open less than [`UNIT_TIME`].
    pub(super) fn still_open(&self) -> bool {
        self.opened.elapsed() < UNIT_TIME
    }

    /// Counts a file taken: `size` bytes of object, `lines` record lines (0 when not known
    /// yet: [`Self::lines_known`] adds them).
    pub(super) fn took(&mut self, size: u64, lines: u64) {
        (self.files, self.bytes, self.lines) = (self.files + 1, self.bytes + size, self.lines + lines);
    }

    /// Adds the record lines of a file taken before its lines were known.
    pub(super) fn lines_known(&mut self, lines: u64) {
        self.lines += lines;
    }

    /// Files and bytes the unit may still take after the one in hand (read ahead).
    pub(super) fn room_after_this(&self) -> (usize, u64) {
        (self.most.saturating_sub(self.files), UNIT_BYTES.saturating_sub(self.bytes))
    }
}

/// What [`Engine::apply_group`] did.
pub(super) enum Grouped {
    /// The files were applied together; the stream advanced past them.
    Applied,
    /// Nothing was done: the next file goes alone.
    Alone,
    /// The unit was discarded (nothing written): the next `good` files can go together
    /// again, then the `alone` files after them go one at a time (the one that failed;
    /// every file of the unit when its commit failed).
    Failed { good: usize, alone: usize },
    /// A broker unit failed after a file's intent was written (`engine::broker_unit`):
    /// the files settled before it may be committed, and the region waits for a later
    /// pass, which reads the intents back from the store.
    Deferred { file: String, error: EngineError },
}

/// How many files the next unit may take: one first (see the module docs), then as many
/// as the line budget allows; after a failed unit, its good files together again, then the
/// others one at a time.
#[derive(Debug)]
pub(super) struct Pacing {
    regroup: usize,
    alone: usize,
    unit_files: usize,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing { regroup: 0, alone: 0, unit_files: 1 }
    }
}

impl Pacing {
    /// The most files the next unit may take (0: the next file goes alone), and whether
    /// they are known to be ready (files of a failed unit, tried again).
    pub fn next(&mut self) -> (usize, bool) {
        match (std::mem::take(&mut self.regroup), self.alone) {
            (0, 0) => (self.unit_files, false),
            (0, _) => {
                self.alone -= 1;
                (0, true)
            }
            (good, _) => (good, true),
        }
    }

    /// Notes what the unit did.
    pub fn after(&mut self, grouped: &Grouped) {
        match grouped {
            Grouped::Applied => self.unit_files = usize::MAX,
            Grouped::Alone | Grouped::Deferred { .. } => {}
            Grouped::Failed { good, alone } => (self.regroup, self.alone) = (*good, *alone),
        }
    }
}

/// The span of one file's work (the fields every log line of a file carries).
pub(super) fn file_span(region: &str, action: &Apply) -> tracing::Span {
    tracing::info_span!("file", region = %region, file = %action.name, seq = action.seq, late = action.late)
}

/// The line that tells a file was applied, with its counts, the SEQ its stream expects
/// next, and how many files went into the store with it.
pub(super) fn log_applied(tally: &Tally, next_seq: Option<u64>, together: usize) {
    tracing::info!(
        applied = tally.applied,
        stale = tally.stale,
        unchanged = tally.unchanged,
        rejected = tally.rejected,
        removed = tally.removed,
        next_seq,
        together,
        "file applied"
    );
}

/// The order in which a unit takes files, advanced on a copy as files join it.
pub(super) trait UnitOrder: Clone {
    fn region(&self) -> &str;
    /// The file to apply next, if any.
    fn next_action(&self) -> Option<Apply>;
    /// Notes that `name` (at `seq`) was applied.
    fn applied(&mut self, name: &str, seq: u64);
    /// The SEQ expected next, for the log.
    fn next_seq(&self) -> Option<u64>;
    /// The stream records a unit's commit writes.
    fn records(&self) -> Vec<StreamRecord>;
}

impl UnitOrder for Stream {
    fn region(&self) -> &str {
        Stream::region(self)
    }
    fn next_action(&self) -> Option<Apply> {
        Stream::next_action(self)
    }
    fn applied(&mut self, name: &str, seq: u64) {
        Stream::applied(self, name, seq);
    }
    fn next_seq(&self) -> Option<u64> {
        Stream::next_seq(self)
    }
    fn records(&self) -> Vec<StreamRecord> {
        vec![self.record().clone()]
    }
}

/// A fixed list of one region's files, applied in its order without moving the stream
/// (a backfill).
#[derive(Clone, Debug)]
pub(super) struct FileList {
    region: String,
    files: std::sync::Arc<[Apply]>,
    at: usize,
}

impl FileList {
    pub fn new(region: String, files: Vec<Apply>) -> Self {
        FileList { region, files: files.into(), at: 0 }
    }
}

impl UnitOrder for FileList {
    fn region(&self) -> &str {
        &self.region
    }
    fn next_action(&self) -> Option<Apply> {
        self.files.get(self.at).cloned()
    }
    fn applied(&mut self, name: &str, _seq: u64) {
        if self.files.get(self.at).is_some_and(|a| a.name == name) {
            self.at += 1;
        }
    }
    fn next_seq(&self) -> Option<u64> {
        None
    }
    fn records(&self) -> Vec<StreamRecord> {
        Vec::new()
    }
}

/// One file of a unit, applied and settled in it.
pub(super) struct InUnit {
    pub action: Apply,
    pub entry: LedgerEntry,
    /// The stream's expected SEQ once the file is applied.
    pub next_seq: Option<u64>,
}

impl Engine {
    /// Applies the stream's next ready files, `first` first, at most `most` of them, in
    /// one unit of work (see the module docs). Unless `retrying` (the files are known to
    /// be ready), a lone pending file is left to the one-file path.
    pub(super) async fn apply_group<O: UnitOrder>(
        &self,
        stream: &mut O,
        first: &Apply,
        (objects, ledger): (&BTreeMap<String, Listed>, &mut HashMap<String, LedgerEntry>),
        (most, retrying): (usize, bool),
        report: &mut PassReport,
        cancel: &CancellationToken,
    ) -> Result<Grouped, EngineError> {
        if self.delivery.group_lines() == 0 {
            return Ok(Grouped::Alone);
        }
        if !retrying {
            let mut after = stream.clone();
            after.applied(&first.name, first.seq);
            if after.next_action().is_none() {
                return Ok(Grouped::Alone);
            }
        }
        if self.delivery.asynchronous() {
            return self.deliver_unit(stream, (objects, ledger), most, report, cancel).await;
        }
        if self.partial_effects_possible() {
            return Ok(Grouped::Alone);
        }
        let mut plan = stream.clone();
        let mut unit: Option<Box<dyn FileDelivery>> = None;
        let mut commit = Commit::default();
        let mut files: Vec<InUnit> = Vec::new();
        let mut taken = Taken::new(most);
        let mut ahead = ReadAhead::default();
        while let Some(action) = plan.next_action() {
            let (Some(entry), Some(listed)) = (ledger.get(&action.name), objects.get(&action.name)) else { break };
            if !joins_a_unit(entry, listed) || !taken.room_for(listed.size, self.delivery.group_lines()) {
                break;
            }
            taken.took(listed.size, 0);
            let span = file_span(stream.region(), &action);
            let settled = async {
                let parsing = match ahead.take(&action.name) {
                    Some(parsing) => parsing,
                    None => self.start_parsing(file_of(entry)?, listed).await?,
                };
                // The files after this one are read while this one is written, as far as
                // the unit can still take them (their sizes and the unit's time are known
                // now; their lines are not, so the line budget may still end the unit
                // before them). Opening them goes along with this file's delivery.
                let read_ahead = async {
                    if taken.still_open() {
                        let room = taken.room_after_this();
                        self.read_ahead(&mut ahead, &plan, &action, (objects, &*ledger), room).await;
                    }
                };
                let added = self.add_to_unit(&mut unit, entry, listed, parsing, cancel);
                let ((), added) = tokio::join!(read_ahead, added);
                let (ready, delivery) = added?;
                let entry = self.delivered_entry(ready);
                self.settle_file(delivery, entry).await
            }
            .instrument(span)
            .await;
            let settled = match settled {
                Ok(settled) => settled,
                Err(EngineError::Cancelled) => return Err(EngineError::Cancelled),
                Err(e) => {
                    tracing::info!(
                        region = stream.region(),
                        file = %action.name,
                        before = files.len(),
                        error = %e,
                        "unit of work discarded at this file: it goes alone, the files before it together again"
                    );
                    return Ok(Grouped::Failed { good: files.len(), alone: 1 });
                }
            };
            let entry = settled.ledger[0].clone(); // `settle_file` builds exactly one entry
            taken.lines_known(entry.record_lines);
            commit.absorb(settled);
            plan.applied(&action.name, action.seq);
            files.push(InUnit { action, entry, next_seq: plan.next_seq() });
            self.heartbeat.beat();
        }
        let Some(delivery) = unit else { return Ok(Grouped::Alone) };
        commit.streams = plan.records();
        match self.commit_delivery(delivery, commit).await {
            Ok(()) => {}
            Err(EngineError::Cancelled) => return Err(EngineError::Cancelled),
            Err(e) if e.is_fenced() => return Err(e),
            Err(e) => {
                tracing::warn!(
                    region = stream.region(),
                    files = files.len(),
                    error = %e,
                    "unit of work not committed; its files go one at a time"
                );
                return Ok(Grouped::Failed { good: 0, alone: files.len() });
            }
        }
        self.applied_unit(stream, plan, files, ledger, report);
        Ok(Grouped::Applied)
    }

    /// Notes the files of a unit as committed: the stream moves to `plan`, each file's
    /// entry goes into the pass's ledger and report.
    pub(super) fn applied_unit<O: UnitOrder>(
        &self,
        stream: &mut O,
        plan: O,
        files: Vec<InUnit>,
        ledger: &mut HashMap<String, LedgerEntry>,
        report: &mut PassReport,
    ) {
        *stream = plan;
        let together = files.len();
        for InUnit { action, entry, next_seq } in files {
            file_span(stream.region(), &action).in_scope(|| log_applied(&entry.tally, next_seq, together));
            ledger.insert(action.name.clone(), entry);
            report.applied.push(action.name);
        }
    }

    /// The unit's delivery, opened for `ticket`'s file, or moved on to it.
    pub(super) async fn open_or_next<'d>(
        &self,
        slot: &'d mut Option<Box<dyn FileDelivery>>,
        ticket: FileTicket,
    ) -> Result<&'d mut dyn FileDelivery, EngineError> {
        match slot {
            Some(delivery) => {
                delivery.next_file(ticket).await?;
                Ok(&mut **delivery)
            }
            None => Ok(&mut **slot.insert(self.delivery.open(ticket).await?)),
        }
    }

    /// Reads a file once into the unit (opening it with the first file). Returns the file
    /// ready to settle and the unit's delivery; a file-level fault is an error.
    async fn add_to_unit<'u>(
        &self,
        unit: &'u mut Option<Box<dyn FileDelivery>>,
        entry: &LedgerEntry,
        listed: &Listed,
        parsing: Parsing,
        cancel: &CancellationToken,
    ) -> Result<(Ready, &'u mut dyn FileDelivery), EngineError> {
        let file = file_of(entry)?.clone();
        let ticket = FileTicket {
            file: file.clone(),
            key: listed.key.clone(),
            reapply: entry.state.is_processed(),
            record_lines: 0, // not known before the read: the store streams the lines
            generation: entry.generation.saturating_add(1),
            together: true,
        };
        let delivery = self.open_or_next(unit, ticket).await?;
        match self.pump(delivery, parsing, listed, cancel).await? {
            Ok(summary) => Ok((self.read_once(entry, file, summary), delivery)),
            Err(fault) => Err(SourceError::Invalid { location: listed.key.clone(), detail: fault.to_string() }.into()),
        }
    }

    /// Starts reading the files the stream would take after `current` (and after those
    /// already read ahead), up to [`READ_AHEAD_FILES`] of them, `files` more at most and
    /// `room` bytes in all (dropped unused when the unit ends before them).
    async fn read_ahead<O: UnitOrder>(
        &self,
        ahead: &mut ReadAhead,
        plan: &O,
        current: &Apply,
        (objects, ledger): (&BTreeMap<String, Listed>, &HashMap<String, LedgerEntry>),
        (files, room): (usize, u64),
    ) {
        let mut after = plan.clone();
        after.applied(&current.name, current.seq);
        let mut room = room;
        for (action, size, _) in &ahead.files {
            after.applied(&action.name, action.seq);
            room = room.saturating_sub(*size);
        }
        while ahead.files.len() < READ_AHEAD_FILES.min(files) {
            let Some(action) = after.next_action() else { return };
            let (Some(entry), Some(listed)) = (ledger.get(&action.name), objects.get(&action.name)) else { return };
            if !joins_a_unit(entry, listed) || listed.size > room {
                return;
            }
            let Ok(file) = file_of(entry) else { return };
            let Ok(parsing) = self.start_parsing(file, listed).await else { return };
            after.applied(&action.name, action.seq);
            room -= listed.size;
            ahead.files.push_back((action, listed.size, parsing));
        }
    }
}

/// How many files of a unit are read ahead of the one being written: a small file takes
/// a parser longer than the writer takes to decide its lines, so several are read at
/// once. Each holds at most its parser's bounded queue.
const READ_AHEAD_FILES: usize = 3;

/// The files of a unit read ahead, in the order the unit takes them: the file, its
/// listed size, its parser.
#[derive(Default)]
struct ReadAhead {
    files: std::collections::VecDeque<(Apply, u64, Parsing)>,
}

impl ReadAhead {
    /// The parser of `name` if it is the next file read ahead; otherwise every file read
    /// ahead is dropped (the order changed), and `None`.
    fn take(&mut self, name: &str) -> Option<Parsing> {
        match self.files.pop_front() {
            Some((action, _, parsing)) if action.name == name => Some(parsing),
            _ => {
                self.files.clear();
                None
            }
        }
    }
}

/// The batch file name of `entry`; an operator error for a name that is not one.
pub(super) fn file_of(entry: &LedgerEntry) -> Result<&FileName, EngineError> {
    entry.batch.as_ref().ok_or_else(|| EngineError::Operator(format!("{} is not a batch file name", entry.name)))
}

/// Whether a file can be read once into a unit: a readable batch object of moderate size
/// with no unfinished delivery (those are judged by the one-file path).
pub(super) fn joins_a_unit(entry: &LedgerEntry, listed: &Listed) -> bool {
    entry.batch.is_some()
        && listed.problem.is_none()
        && listed.size <= UNIT_FILE_BYTES
        && entry.unfinished_delivery().is_none()
}
