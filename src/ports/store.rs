//! The store port.
//!
//! Invariant: [`Store::begin_file`] opens a unit of work in which a file's records are
//! applied under the version rule; nothing of it is visible or durable until
//! [`FileTxn::commit`], which also writes the commit the engine built from the file's
//! tally ([`FileTxn::settle`]): its ledger entry, the stream's advance, audit entries and
//! counters. Dropping a `FileTxn` without committing discards it, so a crash at any
//! instant leaves either the whole file applied or none of it. Stores that cannot offer
//! one transaction must make each step idempotent instead (the version rule makes
//! re-applying a line a no-op).
//!
//! Stores persist a [`Commit`] exactly as handed: they never add to it or change it. The
//! conditions it carries (its fence, its id, [`Commit::expect_uncounted`]) decide only
//! whether it is written at all.

use crate::core::full::{Sweep, Swept};
use crate::core::lease::{Fence, Lease};
use crate::core::ledger::{FileState, LedgerEntry};
use crate::core::name::FileName;
use crate::core::record::{Record, Reject, Tally};
use crate::core::sequencer::StreamRecord;
use crate::core::version::Version;
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use tokio::sync::mpsc;

#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store is busy (locked by another writer): {0}")]
    Busy(String),
    #[error("store I/O failed: {0}")]
    Io(String),
    #[error("store cannot be opened: {0}")]
    Open(String),
    #[error("store schema is version {found}, this build reads version {expected}")]
    SchemaVersion { found: String, expected: String },
    #[error("store holds invalid data: {0}")]
    Corrupt(String),
    #[error("store rejected the write: {0}")]
    Rejected(String),
    #[error("store writer has stopped")]
    Closed,
    #[error("lease lost: {0}")]
    Fenced(String),
    /// A condition of the commit ([`Commit::expect_uncounted`]) no longer holds: another
    /// writer got there first. Nothing was written; the work is planned again from the
    /// store's current state.
    #[error("written meanwhile by another writer: {0}")]
    Superseded(String),
}

impl StoreError {
    /// The retry metric's label for this error.
    pub fn retry_cause(&self) -> crate::ports::RetryCause {
        use crate::ports::RetryCause;
        match self {
            StoreError::Busy(_) => RetryCause::StoreBusy,
            StoreError::Io(_) => RetryCause::StoreIo,
            _ => RetryCause::Other,
        }
    }

    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Busy(_) => true,
            StoreError::Io(_) => true,
            StoreError::Open(_) => false,
            StoreError::SchemaVersion { .. } => false,
            StoreError::Corrupt(_) => false,
            StoreError::Rejected(_) => false,
            StoreError::Closed => false,
            // Another instance owns the region now; writing again cannot succeed.
            StoreError::Fenced(_) => false,
            // The same commit would be refused again; it must be built anew.
            StoreError::Superseded(_) => false,
        }
    }
}

/// An operator action or automatic decision, kept forever.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub region: Option<String>,
    pub seq: Option<u64>,
    pub detail: String,
}

/// Increments of the cumulative counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterDelta {
    pub applied_files: u64,
    pub duplicate_files: u64,
    pub records: Tally,
}

/// Changes written together, atomically.
#[derive(Clone, Debug, Default)]
pub struct Commit {
    pub ledger: Vec<LedgerEntry>,
    pub streams: Vec<StreamRecord>,
    pub audit: Vec<AuditEntry>,
    pub counters: CounterDelta,
    /// When set, the store writes the commit only while the lease still has this token
    /// (checked atomically with the write); otherwise it fails with
    /// [`StoreError::Fenced`] and writes nothing.
    pub fence: Option<Fence>,
    /// The idempotency key of this logical write, the same on every retry: a store that
    /// has already written a commit with this id writes nothing again (a retry whose
    /// earlier attempt took effect but lost its reply must not count twice).
    pub id: Option<String>,
    /// Files this commit counts in `applied_files` for the first time: it is written only
    /// while none of them is counted in the stored ledger (`LedgerEntry::counted`), and
    /// fails with [`StoreError::Superseded`] otherwise.
    pub expect_uncounted: Vec<String>,
}

impl Commit {
    /// Adds `other`'s changes to this commit, as if both were written one after the
    /// other in one transaction: ledger entries, audit entries and conditions are
    /// appended, counters added, and a stream of `other` replaces this commit's record of
    /// the same region. Neither may carry an id or a fence yet: the door gives those to
    /// the commit that is written.
    pub fn absorb(&mut self, other: Commit) {
        debug_assert!(self.id.is_none() && other.id.is_none() && other.fence.is_none());
        self.ledger.extend(other.ledger);
        for stream in other.streams {
            self.streams.retain(|s| s.region != stream.region);
            self.streams.push(stream);
        }
        self.audit.extend(other.audit);
        self.counters.applied_files += other.counters.applied_files;
        self.counters.duplicate_files += other.counters.duplicate_files;
        self.counters.records += other.counters.records;
        self.expect_uncounted.extend(other.expect_uncounted);
    }
}

/// A fresh idempotency key for a [`Commit`]: 24 hex digits laid out like a MongoDB
/// ObjectId, so keys of one process sort in creation order: the time in seconds (4 bytes),
/// a random value fixed for the process (5 bytes), a counter (3 bytes).
pub fn new_commit_id() -> String {
    use rand::Rng;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};
    static PROCESS: OnceLock<[u8; 5]> = OnceLock::new();
    static COUNTER: OnceLock<AtomicU32> = OnceLock::new();
    let process = PROCESS.get_or_init(|| rand::rng().random());
    let counter = COUNTER.get_or_init(|| AtomicU32::new(rand::rng().random_range(0..1 << 23)));
    let secs = u32::try_from(Utc::now().timestamp().max(0)).unwrap_or(u32::MAX);
    let n = counter.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
    format!("{secs:08x}{}{n:06x}", hex::encode(process))
}

impl Commit {
    pub fn is_empty(&self) -> bool {
        self.ledger.is_empty()
            && self.streams.is_empty()
            && self.audit.is_empty()
            && self.counters == CounterDelta::default()
    }
}

/// Everything the store holds about files and streams.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub ledger: Vec<LedgerEntry>,
    pub streams: Vec<StreamRecord>,
}

/// A ledger name and the fingerprints it is known by: how discovery tells a listed
/// object it has seen from a new one without reading the settled entry itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownName {
    pub name: String,
    pub fingerprint: String,
    /// The fingerprint of an upload judged a conflict (see `LedgerEntry::conflict`).
    pub conflict_fingerprint: Option<String>,
}

/// What `status` shows of a region's history, aggregated by the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegionHistory {
    pub region: String,
    /// When its first file was first listed.
    pub first_arrival: Option<DateTime<Utc>>,
    /// When its most recent file was first listed.
    pub last_arrival: Option<DateTime<Utc>>,
    /// The highest SEQ applied or delivered.
    pub last_processed_seq: Option<u64>,
    /// When its files first seen after the `since` asked for were listed (any order).
    pub recent_arrivals: Vec<DateTime<Utc>>,
}

/// A shared document and its version (1 when first written, +1 per write).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shared {
    pub version: u64,
    pub value: String,
}

/// The cumulative counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub applied_files: u64,
    pub duplicate_files: u64,
    pub records_applied: u64,
    pub records_stale: u64,
    pub records_unchanged: u64,
    pub records_rejected: u64,
    pub records_dead_lettered: u64,
    /// Records full files turned into tombstones (`core::full`).
    pub records_removed: u64,
    /// Lines of record types the layout knows and does not apply.
    pub records_ignored: u64,
}

/// A current record as stored (one per identity, tombstones included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    pub record_type: String,
    pub key: String,
    pub deleted: bool,
    pub region: String,
    pub file: String,
    pub version: Version,
    /// The fields as a JSON object text in layout order; `None` for a tombstone.
    pub fields_json: Option<String>,
}

/// Which file a unit of work is for.
#[derive(Clone, Debug)]
pub struct FileTicket {
    pub file: FileName,
    pub key: String,
    /// The file was applied before (a backfill): its lines may be found again unchanged.
    pub reapply: bool,
    /// Record lines the validation pass counted (lets a store pick a bulk strategy); 0
    /// when the file is read once, into a unit of several files (not known yet).
    pub record_lines: u64,
    /// Which delivery of the file this is (see `LedgerEntry::generation`).
    pub generation: u32,
    /// The unit of work may take further files ([`FileTxn::next_file`]): a store may hold
    /// its writes back until the commit.
    pub together: bool,
}

/// A batch of records that came through the broker: one message.
#[derive(Clone, Debug)]
pub struct DeliveredBatch {
    /// The message id (file, generation, first line): applying the same id twice changes
    /// nothing and counts nothing the second time.
    pub receipt: String,
    pub file: String,
    pub generation: u32,
    pub records: Vec<Record>,
}

/// The records of the `fresh` messages of `batches`, each with its message's index,
/// sorted by identity then version: the order both stores apply a batch of messages in,
/// so each line counts as a line-by-line pass in version order would count it.
pub fn in_identity_order<'a>(batches: &'a [DeliveredBatch], fresh: &[bool]) -> Vec<(usize, &'a Record)> {
    let mut order: Vec<(usize, &Record)> = batches
        .iter()
        .enumerate()
        .filter(|(i, _)| fresh[*i])
        .flat_map(|(i, b)| b.records.iter().map(move |r| (i, r)))
        .collect();
    order.sort_by(|(_, a), (_, b)| (&a.record_type, &a.key, a.version).cmp(&(&b.record_type, &b.key, b.version)));
    order
}

/// Records a consumer sent to the dead-letter queue, or took back from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub file: String,
    pub generation: u32,
    pub line: u64,
    pub reason: String,
}

#[async_trait]
pub trait Store: Send + Sync {
    fn describe(&self) -> String;
    /// Whether a [`FileTxn`] is one transaction (nothing visible before its commit). When
    /// not, each of its steps is idempotent instead (see the module docs).
    fn atomic_files(&self) -> bool;
    /// Checks the store answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Tidies up before the process ends; nothing is lost without it. (SQLite checkpoints
    /// its WAL and truncates it, so the next process opens the store without reading it.)
    async fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }
    async fn snapshot(&self) -> Result<Snapshot, StoreError>;
    /// The active part of the ledger (every entry that is not settled, see
    /// [`LedgerEntry::is_settled`] against the region's stored stream) and every stream:
    /// what a pass and `status` work on, whatever the length of the history.
    async fn active(&self) -> Result<Snapshot, StoreError>;
    /// Every ledger name with its fingerprints, in no particular order.
    async fn known_names(&self) -> Result<Vec<KnownName>, StoreError>;
    /// The ledger entries with one of `names`, or at one of the (region, SEQ)
    /// `positions`, by name (each once).
    async fn ledger_lookup(
        &self,
        names: Vec<String>,
        positions: Vec<(String, u64)>,
    ) -> Result<Vec<LedgerEntry>, StoreError>;
    /// Per region with a validly named file, by region: what `status` shows of its
    /// history (`recent_arrivals` are those after `since`).
    async fn region_history(&self, since: DateTime<Utc>) -> Result<Vec<RegionHistory>, StoreError>;
    /// The `n` most recent audit entries, oldest first.
    async fn recent_audit(&self, n: usize) -> Result<Vec<AuditEntry>, StoreError>;
    /// Writes ledger, stream, audit and counter changes atomically.
    async fn commit(&self, commit: Commit) -> Result<(), StoreError>;
    /// Opens the unit of work for one file (see the module docs).
    async fn begin_file(&self, ticket: FileTicket) -> Result<Box<dyn FileTxn>, StoreError>;
    /// How many record lines one unit of work may take over several files
    /// ([`FileTxn::next_file`]); 0 when it takes one file only.
    fn group_lines(&self) -> u64 {
        0
    }
    async fn counts(&self) -> Result<Counts, StoreError>;
    async fn rejects(&self, file: Option<String>) -> Result<Vec<Reject>, StoreError>;
    async fn audit_log(&self) -> Result<Vec<AuditEntry>, StoreError>;
    /// Streams every current record sorted by (type, key), in batches, into `sink`.
    /// Returns how many were sent.
    async fn export(&self, sink: mpsc::Sender<Vec<StoredRecord>>) -> Result<u64, StoreError>;

    /// Applies broker messages under the version rule and keeps a receipt per message, so
    /// a redelivered message is a no-op: its entry is `None` when its receipt already
    /// existed. Dead-letter marks of their lines are cleared (a replayed record was
    /// applied). One entry per message, in order; all or nothing where the store has
    /// transactions, idempotent per message where it does not.
    async fn apply_delivered(&self, batches: Vec<DeliveredBatch>) -> Result<Vec<Option<Tally>>, StoreError>;
    /// Keeps rejected lines outside a file's unit of work (idempotent per file and line).
    async fn keep_rejects(&self, batch: Vec<Reject>) -> Result<(), StoreError>;
    /// Marks lines as dead-lettered (idempotent).
    async fn mark_dead_lettered(&self, marks: Vec<DeadLetter>) -> Result<(), StoreError>;
    /// What the receipts and dead-letter marks of one delivery of a file add up to.
    async fn delivery_progress(&self, file: &str, generation: u32) -> Result<Tally, StoreError>;

    /// Sweeps a region after one of its files was applied (see `core::full`): raises the
    /// region's floor for a full file, turns its live records older than a floor at or
    /// above the file into tombstones, and counts what a `report` full file does not
    /// contain. Idempotent; removals are counted once per file and delivery (the count
    /// returned includes those of an earlier attempt of the same delivery).
    async fn sweep(&self, sweep: &Sweep) -> Result<Swept, StoreError>;

    /// A small document shared by every instance (the alert state), or `None`.
    async fn read_shared(&self, key: &str) -> Result<Option<Shared>, StoreError>;

    /// Writes `value` when the document's version is still `expected` (`None`: it does
    /// not exist yet): compare-and-set. Returns the new version, or `None` when another
    /// writer changed it first (nothing written).
    async fn write_shared(&self, key: &str, expected: Option<u64>, value: String) -> Result<Option<u64>, StoreError>;

    /// Claims (or renews) the lease `name` for `owner` until `now + ttl`; returns it when
    /// `owner` holds it after the call, `None` when another owner does (see
    /// [`crate::core::lease::claim`]; applied by compare-and-set).
    async fn claim_lease(
        &self,
        name: &str,
        owner: &str,
        ttl: TimeDelta,
        now: DateTime<Utc>,
    ) -> Result<Option<Lease>, StoreError>;

    /// Lets the lease go at once when `owner` holds it (its token stays).
    async fn release_lease(&self, name: &str, owner: &str, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Every lease, expired or not.
    async fn leases(&self) -> Result<Vec<Lease>, StoreError>;

    /// The ledger entries in `state`, by name: what a full [`Store::snapshot`] would
    /// show for them, without reading the rest (the service polls files in flight).
    async fn files_in_state(&self, state: FileState) -> Result<Vec<LedgerEntry>, StoreError>;
}

/// One file's unit of work (see the module docs). Records of one file may be applied in
/// any order: their versions differ, so the version rule gives the same result.
#[async_trait]
pub trait FileTxn: Send {
    /// Takes records to apply under the version rule. It may return before they are
    /// applied: a failure to apply them is then the answer of a later call of the unit
    /// of work (at the latest [`FileTxn::settle`] or [`FileTxn::commit`]).
    async fn apply(&mut self, batch: Vec<Record>) -> Result<(), StoreError>;
    /// Keeps rejected lines with file, line and reason.
    async fn reject(&mut self, batch: Vec<Reject>) -> Result<(), StoreError>;
    /// [`Store::sweep`] inside the unit of work, after its records.
    async fn sweep(&mut self, sweep: &Sweep) -> Result<Swept, StoreError>;
    /// Finishes applying the records taken (a staged file is merged) and returns what
    /// happened to the file's lines. Nothing is durable yet where the store has
    /// transactions.
    async fn settle(&mut self) -> Result<Tally, StoreError>;
    /// Makes the file's records durable together with `commit`, written exactly as handed
    /// (the engine built it from [`FileTxn::settle`]'s tally). Settles first when that was
    /// not called.
    async fn commit(self: Box<Self>, commit: Commit) -> Result<(), StoreError>;
    /// Ends the current file's part of the unit of work (settled, and swept if it is to
    /// be) and takes the records that follow for `ticket`'s file, in the same unit of
    /// work: one [`FileTxn::commit`] makes every file's records durable, or none.
    /// [`FileTxn::settle`] then answers for the new file alone, with exactly the counts
    /// it would have had in a unit of its own after the files before it. Only where
    /// [`Store::group_lines`] is above 0. Like [`FileTxn::apply`], it may return before
    /// it is done, a failure being the answer of a later call.
    async fn next_file(&mut self, ticket: FileTicket) -> Result<(), StoreError> {
        Err(StoreError::Rejected(format!("{}: this store takes one file per unit of work", ticket.file.name)))
    }
}
