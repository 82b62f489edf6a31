//! Background WAL checkpoints: a thread with its own connection copies committed pages
//! from the WAL back into the database file with `wal_checkpoint(PASSIVE)`, which never
//! blocks the writer or readers. Pages that several files update in between are copied
//! once. The thread stops when the store is dropped.

use super::rows::map_err;
use crate::ports::store::StoreError;
use rusqlite::Connection;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

const INTERVAL: Duration = Duration::from_millis(500);

pub(super) struct Checkpointer {
    _stop: mpsc::Sender<()>,
}

impl Checkpointer {
    pub(super) fn start(conn: Connection) -> Result<Self, StoreError> {
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                loop {
                    match stopped.recv_timeout(INTERVAL) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                    // Busy or locked only means "not now"; the next round tries again.
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).map_err(map_err)
                        && !e.is_transient()
                    {
                        tracing::warn!(error = %e, "WAL checkpoint failed");
                    }
                }
            })
            .map_err(|e| StoreError::Open(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Self { _stop: stop })
    }
}
