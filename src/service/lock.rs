//! The embedded store's process lock.
//!
//! Invariant: only one `run` drives an embedded store at a time: the sequencer state is
//! read and advanced by one process. The lock is an OS file lock next to the database,
//! released when the process ends however it ends.

use crate::config::{Settings, StoreSpec};
use anyhow::Context;
use std::path::PathBuf;

/// Held while the service runs on an embedded store; `None` for a shared store.
pub struct StoreLock {
    _file: std::fs::File,
}

/// Takes the lock of an embedded store; `None` for a shared store (several instances
/// coordinate through region leases instead).
pub fn lock_embedded_store(settings: &Settings) -> anyhow::Result<Option<StoreLock>> {
    let StoreSpec::Sqlite(db) = &settings.store else { return Ok(None) };
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("store {}", db.display()))?;
    }
    let path = PathBuf::from(format!("{}.lock", db.display()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(StoreLock { _file: file })),
        Err(std::fs::TryLockError::WouldBlock) => {
            anyhow::bail!("another esr-ingest run is already using the store {}", db.display())
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}
