//! One retry helper for transient errors: exponential backoff with jitter, bounded
//! attempts, and cancellation.

use super::EngineError;
use backon::{ExponentialBuilder, Retryable};
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Retries `op` while it fails with a transient error (at most 6 attempts, 100 ms doubling
/// to 5 s, with jitter). A cancellation stops the wait at once.
pub async fn retry_transient<T, F, Fut>(what: &str, cancel: &CancellationToken, op: F) -> Result<T, EngineError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, EngineError>>,
{
    let policy = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(5)
        .with_jitter();
    let attempt =
        op.retry(policy).when(|e: &EngineError| e.is_transient()).notify(|e: &EngineError, wait: Duration| {
            crate::telemetry::metrics::retry(e.retry_cause());
            tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "{what} failed; retrying");
        });
    tokio::select! {
        r = attempt => r,
        () = cancel.cancelled() => Err(EngineError::Cancelled),
    }
}
