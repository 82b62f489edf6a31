//! The single writer: a dedicated thread owns the write connection, so SQLite's blocking
//! work never runs on the async runtime, and there is exactly one writer.
//!
//! A file's unit of work is a `BEGIN IMMEDIATE` transaction held open across the
//! commands of its own bounded channel; when that channel closes without a `Commit`
//! (the `FileTxn` was dropped: an error, a cancellation) the transaction is rolled back.

use super::rows::{apply_records, insert_rejects, map_err, write_commit};
use crate::core::record::{Record, Reject, Tally};
use crate::ports::store::{Commit, FileTxn, StoreError};
use async_trait::async_trait;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub(super) enum WriterCmd {
    Commit(Commit, Reply<()>),
    BeginFile(mpsc::Receiver<TxnCmd>, Reply<()>),
}

pub(super) enum TxnCmd {
    Apply(Vec<Record>, Reply<Tally>),
    Reject(Vec<Reject>, Reply<()>),
    Commit(Commit, Reply<()>),
}

/// Runs until every sender of `commands` is gone.
pub(super) fn run(conn: Connection, mut commands: mpsc::Receiver<WriterCmd>) {
    while let Some(cmd) = commands.blocking_recv() {
        match cmd {
            WriterCmd::Commit(c, reply) => {
                let _ = reply.send(in_transaction(&conn, |conn| write_commit(conn, &c)));
            }
            WriterCmd::BeginFile(txn, reply) => match conn.execute_batch("BEGIN IMMEDIATE").map_err(map_err) {
                Ok(()) => {
                    let _ = reply.send(Ok(()));
                    file_transaction(&conn, txn);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
        }
    }
}

fn in_transaction(
    conn: &Connection,
    work: impl FnOnce(&Connection) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(map_err)?;
    match work(conn).and_then(|()| conn.execute_batch("COMMIT").map_err(map_err)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

fn file_transaction(conn: &Connection, mut txn: mpsc::Receiver<TxnCmd>) {
    let mut failed: Option<String> = None;
    while let Some(cmd) = txn.blocking_recv() {
        let aborted =
            || StoreError::Io(format!("the file's transaction was aborted: {}", failed.clone().unwrap_or_default()));
        match cmd {
            TxnCmd::Apply(batch, reply) => {
                let r = if failed.is_some() { Err(aborted()) } else { apply_records(conn, &batch) };
                if let Err(e) = &r {
                    failed.get_or_insert(e.to_string());
                }
                let _ = reply.send(r);
            }
            TxnCmd::Reject(batch, reply) => {
                let r = if failed.is_some() { Err(aborted()) } else { insert_rejects(conn, &batch) };
                if let Err(e) = &r {
                    failed.get_or_insert(e.to_string());
                }
                let _ = reply.send(r);
            }
            TxnCmd::Commit(c, reply) => {
                let r = match failed {
                    Some(_) => Err(aborted()),
                    None => write_commit(conn, &c).and_then(|()| conn.execute_batch("COMMIT").map_err(map_err)),
                };
                if r.is_err() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                let _ = reply.send(r);
                return;
            }
        }
    }
    // The FileTxn was dropped without a commit.
    let _ = conn.execute_batch("ROLLBACK");
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
    async fn apply(&mut self, batch: Vec<Record>) -> Result<Tally, StoreError> {
        self.call(|r| TxnCmd::Apply(batch, r)).await
    }

    async fn reject(&mut self, batch: Vec<Reject>) -> Result<(), StoreError> {
        self.call(|r| TxnCmd::Reject(batch, r)).await
    }

    async fn commit(self: Box<Self>, commit: Commit) -> Result<(), StoreError> {
        self.call(|r| TxnCmd::Commit(commit, r)).await
    }
}
