//! The object source port.

use crate::core::ledger::Listed;
use async_trait::async_trait;
use tokio::io::AsyncRead;

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

/// Lists and reads objects. Implementations must list the *whole* source on every call
/// (no "start after the last key" cursor: a late file may sort anywhere).
#[async_trait]
pub trait ObjectSource: Send + Sync {
    /// A human-readable location, e.g. the folder path or `s3://bucket/prefix`.
    fn describe(&self) -> String;

    /// Every object under the source, with a fingerprint that changes on re-upload.
    async fn list(&self) -> Result<Vec<Listed>, SourceError>;

    /// A cheap check that the source answers and may be listed (readiness).
    async fn ping(&self) -> Result<(), SourceError>;

    /// Streams the object as listed; fails with [`SourceError::Changed`] when it can tell
    /// the object is no longer the listed one.
    async fn open(&self, object: &Listed) -> Result<ObjectReader, SourceError>;
}
