//! The single writer: a dedicated thread owns the write connection, so SQLite's blocking
//! work never runs on the async runtime, and there is exactly one writer.
//!
//! A file's unit of work is a `BEGIN IMMEDIATE` transaction held open across the
//! commands of its own bounded channel; when that channel closes without a `Commit`
//! (the `FileTxn` was dropped: an error, a cancellation) the transaction is rolled back.
//! A file of up to [`STREAMED_RECORDS`] lines (or of unknown length) is applied batch by
//! batch as it streams in (overlapping parsing and writing). A larger file is staged and merged in key order at
//! commit (`rows::merge_staged`): random-key upserts into a B-tree much larger than the
//! page cache would otherwise rewrite pages over and over. Memory stays bounded either way (and in a unit of several files, by `newest`).
//!
//! A unit of work can take a region's consecutive files (`FileTxn::next_file`, up to
//! [`GROUP_LINES`] lines): opened for that (`FileTicket::together`), or from its second
//! file on, lines are decided in memory and each identity is written once (`newest`), so
//! a backlog that updates the same records day after day writes them once per unit
//! instead of once per line.

use super::full_files::{sweep, touches_records};
use super::newest::Newest;
use super::rows::{
    STAGING, Writes, apply_delivered, apply_records, insert_rejects, load_lease, map_err, mark_dead_lettered,
    merge_staged, stage_records, store_lease, write_commit,
};
use crate::core::full::{Sweep, Swept};
use crate::core::lease::{self, Claim, Lease};
use crate::core::record::{Record, Reject, Tally};
use crate::ports::store::{Commit, DeadLetter, DeliveredBatch, FileTicket, FileTxn, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Files with more record lines than this are staged and merged in key order.
pub(super) const STREAMED_RECORDS: u64 = 50_000;

/// Record lines one unit of work takes over several files (see the module docs).
pub(super) const GROUP_LINES: u64 = 100_000;

pub(super) enum WriterCmd {
    Commit(Commit, Reply<()>),
    BeginFile(FileTicket, mpsc::Receiver<TxnCmd>, Reply<()>),
    Delivered(Vec<DeliveredBatch>, Reply<Vec<Option<Tally>>>),
    DeadLetters(Vec<DeadLetter>, Reply<()>),
    Rejects(Vec<Reject>, Reply<()>),
    Sweep(Sweep, Reply<Swept>),
    /// Claims (`Some(ttl)`) or releases (`None`) a lease for an owner at a time.
    Lease(String, String, Option<TimeDelta>, DateTime<Utc>, Reply<Option<Lease>>),
    /// Compare-and-set of a shared document: key, expected version, value.
    Shared(String, Option<u64>, String, Reply<Option<u64>>),
    /// Checkpoints the WAL into the database and truncates it (before the process ends).
    Truncate(Reply<()>),
}

pub(super) enum TxnCmd {
    /// No reply: a failure is the answer to the next command (see `Failure`).
    Apply(Vec<Record>),
    Reject(Vec<Reject>, Reply<()>),
    Settle(Reply<Tally>),
    Sweep(Sweep, Reply<Swept>),
    Commit(Commit, Reply<()>),
    /// No reply, as `Apply`.
    NextFile(FileTicket),
}

/// Runs until every sender of `commands` is gone.
///
/// Consumers' deliveries wait while other commands are queued: they are taken together
/// once nothing else waits (or once [`DELIVERIES_TOGETHER`] messages wait, or
/// [`PASSED_AT_MOST`] other commands ran ahead of them) and written in one transaction.
/// The engine's commands (a file's ledger entries, a lease) are each awaited by one caller
/// and are short, so they do not queue behind the consumers' larger transactions; and a
/// transaction rewrites every page it touches, so deliveries written together cost fewer
/// page writes than the same written apart. Commands of one caller keep their order:
/// every command is answered before its caller sends another.
pub(super) fn run(conn: Connection, mut commands: mpsc::Receiver<WriterCmd>) {
    let mut writes = Writes::default();
    let mut deliveries = Deliveries::default();
    loop {
        let cmd = match commands.try_recv() {
            Ok(cmd) => cmd,
            Err(mpsc::error::TryRecvError::Empty) if !deliveries.calls.is_empty() => {
                deliveries.apply(&conn, &mut writes);
                continue;
            }
            Err(_) => match commands.blocking_recv() {
                Some(cmd) => cmd,
                None => break,
            },
        };
        match cmd {
            WriterCmd::Delivered(batches, reply) => {
                deliveries.calls.push((batches, reply));
                if deliveries.messages() >= DELIVERIES_TOGETHER {
                    deliveries.apply(&conn, &mut writes);
                }
            }
            other => {
                // A file's transaction holds the writer until the file commits: what
                // waits goes first.
                if matches!(other, WriterCmd::BeginFile(..)) {
                    deliveries.apply(&conn, &mut writes);
                }
                execute(&conn, &mut writes, other);
                deliveries.passed += usize::from(!deliveries.calls.is_empty());
                if deliveries.passed >= PASSED_AT_MOST {
                    deliveries.apply(&conn, &mut writes);
                }
            }
        }
    }
    // the senders are gone, but deliveries taken before still have their callers
    deliveries.apply(&conn, &mut writes);
}

/// Runs one command in its own transaction ([`run`] gathers deliveries first).
fn execute(conn: &Connection, writes: &mut Writes, cmd: WriterCmd) {
    match cmd {
        WriterCmd::Commit(c, reply) => {
            let _ = reply.send(in_transaction(conn, writes, |conn, _| write_commit(conn, &c)));
        }
        WriterCmd::Delivered(batches, reply) => apply_call(conn, writes, (batches, reply)),
        WriterCmd::Lease(name, owner, ttl, now, reply) => {
            let _ = reply.send(in_transaction(conn, writes, |conn, _| lease(conn, &name, &owner, ttl, now)));
        }
        WriterCmd::Shared(key, expected, value, reply) => {
            let _ = reply.send(in_transaction(conn, writes, |conn, _| write_shared(conn, &key, expected, &value)));
        }
        WriterCmd::Truncate(reply) => {
            // Busy (a reader in a transaction) only means the WAL stays for now.
            let done = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(map_err);
            let _ = reply.send(done);
        }
        WriterCmd::Sweep(s, reply) => {
            let _ = reply.send(in_transaction(conn, writes, |conn, writes| sweep(conn, &mut writes.lows, &s)));
        }
        WriterCmd::Rejects(batch, reply) => {
            let _ = reply.send(in_transaction(conn, writes, |conn, _| insert_rejects(conn, &batch)));
        }
        WriterCmd::DeadLetters(marks, reply) => {
            let _ = reply.send(in_transaction(conn, writes, |conn, _| mark_dead_lettered(conn, &marks)));
        }
        WriterCmd::BeginFile(mut ticket, txn, reply) => {
            // Whether the file was applied before is read inside the transaction, from
            // the stored ledger row: another process (a backfill) may have applied it
            // since it was planned, and its lines are then found unchanged (the merge
            // of a staged file counts them so).
            let begun = conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(map_err)
                .and_then(|()| super::rows::applied_before(conn, &ticket.file.name));
            match begun {
                Ok(applied_before) => {
                    let _ = reply.send(Ok(()));
                    ticket.reapply |= applied_before;
                    if !file_transaction(conn, writes, &ticket, txn) {
                        writes.clear();
                    }
                }
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    let _ = reply.send(Err(e));
                }
            }
        }
    }
}

/// Deliveries taken in one transaction at most (messages, whoever sent them).
const DELIVERIES_TOGETHER: usize = 512;

type DeliveryCall = (Vec<DeliveredBatch>, Reply<Vec<Option<Tally>>>);

/// Other commands that may run ahead of waiting deliveries before they are written
/// anyway (however busy the other callers keep the writer, consumers get their turn).
const PASSED_AT_MOST: usize = 16;

/// Consumers' deliveries waiting to be written together (see [`run`]).
#[derive(Default)]
struct Deliveries {
    /// One call per consumer at most: each awaits its answer before it sends again.
    calls: Vec<DeliveryCall>,
    /// Other commands run while they waited.
    passed: usize,
}

impl Deliveries {
    fn messages(&self) -> usize {
        self.calls.iter().map(|(batches, _)| batches.len()).sum()
    }

    /// Applies the deliveries waiting, if any.
    fn apply(&mut self, conn: &Connection, writes: &mut Writes) {
        self.passed = 0;
        apply_deliveries(conn, writes, std::mem::take(&mut self.calls));
    }
}

/// Applies one call's deliveries in a transaction of their own and answers it.
fn apply_call(conn: &Connection, writes: &mut Writes, (batches, reply): DeliveryCall) {
    let _ = reply.send(in_transaction(conn, writes, |conn, writes| apply_delivered(conn, writes, &batches)));
}

/// Applies the deliveries of several calls in one transaction and answers each call with
/// its own messages' outcomes. When that transaction fails, nothing of it is written: a
/// transient failure (the store busy) is every caller's answer, and each retries with
/// its backoff; after any other failure each call is applied alone, so a call is refused
/// only for its own records.
fn apply_deliveries(conn: &Connection, writes: &mut Writes, calls: Vec<DeliveryCall>) {
    if calls.len() < 2 {
        calls.into_iter().for_each(|call| apply_call(conn, writes, call));
        return;
    }
    let mut replies = Vec::with_capacity(calls.len());
    let mut all = Vec::new();
    for (batches, reply) in calls {
        replies.push((batches.len(), reply));
        all.extend(batches);
    }
    match in_transaction(conn, writes, |conn, writes| apply_delivered(conn, writes, &all)) {
        Ok(outcomes) => {
            let mut outcomes = outcomes.into_iter();
            for (count, reply) in replies {
                let _ = reply.send(Ok(outcomes.by_ref().take(count).collect()));
            }
        }
        Err(e) if e.is_transient() => {
            tracing::debug!(calls = replies.len(), error = %e, "consumers' deliveries not written; each caller retries");
            for (_, reply) in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            tracing::debug!(calls = replies.len(), error = %e, "deliveries written together failed; writing each call alone");
            let mut all = all.into_iter();
            for (count, reply) in replies {
                apply_call(conn, writes, (all.by_ref().take(count).collect(), reply));
            }
        }
    }
}

/// Runs `work` in an immediate transaction; before the commit, the lows it noted are
/// written (see `lows`). On failure everything is rolled back and `writes` forgets what
/// the transaction left in it.
fn in_transaction<T>(
    conn: &Connection,
    writes: &mut Writes,
    work: impl FnOnce(&Connection, &mut Writes) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(map_err)?;
    let done = work(conn, writes).and_then(|t| {
        writes.lows.write(conn)?;
        conn.execute_batch("COMMIT").map_err(map_err).map(|()| t)
    });
    if done.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
        writes.clear();
    }
    done
}

/// One file's records on their way into the store.
struct Pending {
    staged: Option<u64>,
    tally: Tally,
    /// Set once every record is applied (a staged file merged).
    settled: bool,
}

impl Pending {
    fn new(conn: &Connection, ticket: &FileTicket) -> Result<Self, StoreError> {
        let staged = if ticket.record_lines > STREAMED_RECORDS {
            conn.execute_batch(STAGING).map_err(map_err)?;
            Some(0)
        } else {
            None
        };
        Ok(Self { staged, tally: Tally::default(), settled: false })
    }

    /// Takes a batch: staged, decided in memory (`newest`, in a unit of several files), or
    /// applied at once.
    fn add(
        &mut self,
        conn: &Connection,
        writes: &mut Writes,
        newest: Option<&mut Newest>,
        mut batch: Vec<Record>,
    ) -> Result<(), StoreError> {
        if let (None, Some(newest)) = (&self.staged, newest) {
            // Decided in line order; written in identity order at the flush.
            return newest.decide(conn, writes, batch, &mut self.tally);
        }
        // In identity order the B-tree is walked forwards (line order kept per identity).
        batch.sort_unstable_by(|a, b| {
            (&a.record_type, &a.key, a.version.line).cmp(&(&b.record_type, &b.key, b.version.line))
        });
        match &mut self.staged {
            Some(n) => {
                stage_records(conn, writes, &batch)?;
                *n += batch.len() as u64;
            }
            None => self.tally += apply_records(conn, writes, &batch)?,
        }
        Ok(())
    }

    fn settle(&mut self, conn: &Connection, ticket: &FileTicket) -> Result<Tally, StoreError> {
        if !self.settled {
            if let Some(staged) = self.staged.take() {
                self.tally = merge_staged(conn, ticket, staged, self.tally.rejected)?;
            }
            self.settled = true;
        }
        Ok(self.tally)
    }
}

/// Serves one unit of work's commands (one file, or several: `TxnCmd::NextFile`) until
/// its commit or until its handle is dropped. Returns whether the transaction committed.
fn file_transaction(
    conn: &Connection,
    writes: &mut Writes,
    first: &FileTicket,
    mut txn: mpsc::Receiver<TxnCmd>,
) -> bool {
    let mut ticket = first.clone();
    let mut failure = Failure::default();
    let mut pending = match failure.step(|| Pending::new(conn, &ticket)) {
        Ok(p) => p,
        Err(e) => {
            failure.unanswered = Some(e);
            Pending { staged: None, tally: Tally::default(), settled: false }
        }
    };
    // In a unit that may take several files: what is decided in memory and not written yet.
    let mut newest: Option<Newest> = ticket.together.then(Newest::default);
    while let Some(cmd) = txn.blocking_recv() {
        match cmd {
            TxnCmd::Apply(batch) => {
                let applied = failure.step(|| pending.add(conn, writes, newest.as_mut(), batch));
                failure.hold(applied);
            }
            TxnCmd::Reject(batch, reply) => {
                let r = failure
                    .step(|| insert_rejects(conn, &batch).map(|()| pending.tally.rejected += batch.len() as u64));
                let _ = reply.send(failure.answer(r));
            }
            TxnCmd::Settle(reply) => {
                let r = failure.step(|| pending.settle(conn, &ticket));
                let _ = reply.send(failure.answer(r));
            }
            TxnCmd::Sweep(s, reply) => {
                let r = failure.step(|| {
                    pending.settle(conn, &ticket)?;
                    if let Some(newest) = newest.as_mut().filter(|n| !n.is_empty())
                        && touches_records(conn, &s)?
                    {
                        newest.flush(conn, writes)?;
                    }
                    sweep(conn, &mut writes.lows, &s)
                });
                let _ = reply.send(failure.answer(r));
            }
            TxnCmd::NextFile(next) => {
                let r = failure.step(|| {
                    pending.settle(conn, &ticket)?;
                    ticket = next;
                    // As for the first file: read inside the transaction (see `run`).
                    ticket.reapply |= super::rows::applied_before(conn, &ticket.file.name)?;
                    pending = Pending::new(conn, &ticket)?;
                    let newest = newest.get_or_insert_with(Newest::default);
                    if pending.staged.is_some() {
                        newest.flush(conn, writes)?; // the merge reads the records table
                    }
                    Ok(())
                });
                failure.hold(r);
            }
            TxnCmd::Commit(c, reply) => {
                let r = failure.step(|| {
                    pending.settle(conn, &ticket)?;
                    if let Some(newest) = newest.as_mut() {
                        newest.flush(conn, writes)?;
                    }
                    writes.lows.write(conn)?;
                    write_commit(conn, &c)?;
                    conn.execute_batch("COMMIT").map_err(map_err)
                });
                let r = failure.answer(r);
                let committed = r.is_ok();
                if !committed {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                let _ = reply.send(r);
                return committed;
            }
        }
    }
    // The FileTxn was dropped without a commit.
    let _ = conn.execute_batch("ROLLBACK");
    false
}

/// How a file's transaction failed: once a step has failed, every later step is refused
/// (the transaction is rolled back at the end). A batch of records has no reply of its
/// own, so its failure is the answer to the next command that has one.
#[derive(Default)]
struct Failure {
    /// The first failure, as text.
    why: Option<String>,
    /// A failure nobody has been told of yet.
    unanswered: Option<StoreError>,
}

impl Failure {
    /// Runs one step, unless a step failed before; remembers its failure.
    fn step<T>(&mut self, work: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        if let Some(why) = &self.why {
            return Err(aborted(why));
        }
        let r = work();
        if let Err(e) = &r {
            self.why = Some(e.to_string());
        }
        r
    }

    /// Keeps the failure of a step that has no reply, for the next one that has.
    fn hold(&mut self, r: Result<(), StoreError>) {
        if let Err(e) = r {
            self.unanswered.get_or_insert(e);
        }
    }

    /// The reply to a command: a failure nobody was told of comes first.
    fn answer<T>(&mut self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        match self.unanswered.take() {
            Some(e) => Err(e),
            None => r,
        }
    }
}

/// The error of a step after an earlier step of the file's transaction failed.
fn aborted(why: &str) -> StoreError {
    StoreError::Io(format!("the file's transaction was aborted: {why}"))
}

/// The async handle of one file's transaction.
pub(super) struct SqliteFileTxn {
    pub(super) commands: mpsc::Sender<TxnCmd>,
}

impl SqliteFileTxn {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> TxnCmd) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

#[async_trait]
impl FileTxn for SqliteFileTxn {
    /// Queues the batch and returns: the writer goes on with it while the next one is
    /// read, and a failure to apply it is the answer to the next call that waits.
    async fn apply(&mut self, batch: Vec<Record>) -> Result<(), StoreError> {
        self.commands.send(TxnCmd::Apply(batch)).await.map_err(|_| StoreError::Closed)
    }

    async fn reject(&mut self, batch: Vec<Reject>) -> Result<(), StoreError> {
        self.call(|r| TxnCmd::Reject(batch, r)).await
    }

    async fn settle(&mut self) -> Result<Tally, StoreError> {
        self.call(TxnCmd::Settle).await
    }

    async fn sweep(&mut self, sweep: &Sweep) -> Result<Swept, StoreError> {
        let sweep = sweep.clone();
        self.call(|r| TxnCmd::Sweep(sweep, r)).await
    }

    async fn commit(self: Box<Self>, commit: Commit) -> Result<(), StoreError> {
        self.call(|r| TxnCmd::Commit(commit, r)).await
    }

    /// Queues the next file and returns, as [`FileTxn::apply`] does.
    async fn next_file(&mut self, ticket: FileTicket) -> Result<(), StoreError> {
        self.commands.send(TxnCmd::NextFile(ticket)).await.map_err(|_| StoreError::Closed)
    }
}

/// Compare-and-set of one shared document, inside the caller's transaction.
fn write_shared(conn: &Connection, key: &str, expected: Option<u64>, value: &str) -> Result<Option<u64>, StoreError> {
    let current: Option<i64> = conn
        .query_row("SELECT version FROM shared WHERE key = ?1", params![key], |r| r.get(0))
        .optional()
        .map_err(map_err)?;
    let current = current.map(|v| u64::try_from(v).unwrap_or(0));
    if current != expected {
        return Ok(None);
    }
    let next = expected.unwrap_or(0) + 1;
    let stored = i64::try_from(next).map_err(|_| StoreError::Corrupt(format!("shared {key}: version overflow")))?;
    conn.execute(
        "INSERT INTO shared (key, version, value) VALUES (?1, ?2, ?3)
         ON CONFLICT (key) DO UPDATE SET version = excluded.version, value = excluded.value",
        params![key, stored, value],
    )
    .map_err(map_err)?;
    Ok(Some(next))
}

/// Claims or releases a lease inside the caller's (immediate) transaction: read, decide,
/// write, with no other writer in between.
fn lease(
    conn: &Connection,
    name: &str,
    owner: &str,
    ttl: Option<TimeDelta>,
    now: DateTime<Utc>,
) -> Result<Option<Lease>, StoreError> {
    let current = load_lease(conn, name)?;
    let Some(ttl) = ttl else {
        if let Some(released) = current.as_ref().and_then(|l| lease::release(l, owner, now)) {
            store_lease(conn, &released)?;
        }
        return Ok(None);
    };
    match lease::claim(name, current.as_ref(), owner, ttl, now) {
        Claim::Renew(l) | Claim::Take(l) => {
            store_lease(conn, &l)?;
            Ok(Some(l))
        }
        Claim::Busy(_) => Ok(None),
    }
}
