//! The object source port.

use crate::core::ledger::Listed;
use async_trait::async_trait;
use std::sync::Arc;
use tokio::io::AsyncRead;

/// Which names a quick listing may leave out (see [`ObjectSource::list_quick`]).
pub type SettledNames = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// A streaming body. Memory use is bounded by the reader, whatever the object's size.
pub type ObjectReader = Box<dyn AsyncRead + Send + Unpin>;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{location}: not found")]
    NotFound { location: String },
    #[error("{location}: changed while being read (uploaded again); it is read afresh next pass")]
    Changed { location: String },
    #[error("{location}: permission denied: {detail}")]
    Denied { location: String, detail: String },
    #[error("{location}: {detail}")]
    Unavailable { location: String, detail: String },
    #[error("invalid source {location}: {detail}")]
    Invalid { location: String, detail: String },
}

impl SourceError {
    /// Transient errors are retried (now with backoff, or on the next pass).
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::NotFound { .. } => true, // deleted between listing and reading
            SourceError::Changed { .. } => true,
            SourceError::Unavailable { .. } => true,
            SourceError::Denied { .. } => false,
            SourceError::Invalid { .. } => false,
        }
    }
}

/// Lists and reads objects. [`ObjectSource::list`] lists the *whole* source on every call
/// (no "start after the last key" cursor: a late file may sort anywhere); it is what a
/// full pass (a reconcile) reads. The quick listings serve the passes in between.
#[async_trait]
pub trait ObjectSource: Send + Sync {
    /// A human-readable location, e.g. the folder path or `s3://bucket/prefix`.
    fn describe(&self) -> String;

    /// Every object under the source, with a fingerprint that changes on re-upload.
    async fn list(&self) -> Result<Vec<Listed>, SourceError>;

    /// Every object as [`ObjectSource::list`] lists it, except the objects of settled
    /// names (`settled(name)`, the name being the key's last segment) that no other key
    /// shares: those are left out, unchecked. So a new name is found as soon as by
    /// `list`, and a settled name uploaded again in place only by the next full listing.
    /// The default lists everything.
    async fn list_quick(&self, settled: SettledNames) -> Result<Vec<Listed>, SourceError> {
        let _ = settled;
        self.list().await
    }

    /// The objects at exactly these keys, as `list` would list them; a key with no object
    /// is left out. For a pass that looks only where notifications said something arrived.
    async fn list_keys(&self, keys: &[String]) -> Result<Vec<Listed>, SourceError> {
        let mut all = self.list().await?;
        all.retain(|l| keys.contains(&l.key));
        Ok(all)
    }

    /// A cheap check that the source answers and may be listed (readiness).
    async fn ping(&self) -> Result<(), SourceError>;

    /// Streams the object as listed; fails with [`SourceError::Changed`] when it can tell
    /// the object is no longer the listed one.
    async fn open(&self, object: &Listed) -> Result<ObjectReader, SourceError>;
}
