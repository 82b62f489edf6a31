//! The alert notification port: one message to wherever people read alerts.

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The receiver is unreachable, overloaded or rate-limiting: try again later.
    #[error("{0}")]
    Unavailable(String),
    /// The receiver refused the message (a wrong URL, a revoked hook): retrying cannot help.
    #[error("{0}")]
    Refused(String),
}

impl NotifyError {
    pub fn is_transient(&self) -> bool {
        match self {
            NotifyError::Unavailable(_) => true,
            NotifyError::Refused(_) => false,
        }
    }
}

#[async_trait]
pub trait AlertSink: Send + Sync {
    fn describe(&self) -> String;

    /// Sends one message; returns once the receiver accepted it.
    async fn send(&self, text: &str) -> Result<(), NotifyError>;
}
