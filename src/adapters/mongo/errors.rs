//! Mapping driver errors to [`StoreError`], with the transient/permanent split.
//!
//! Transient (retried with backoff by the caller): network and pool errors, server
//! selection timeouts, errors labelled `TransientTransactionError` or
//! `RetryableWriteError`, and the server codes of WriteConflict, NotWritablePrimary,
//! node recovery, shutdown and write-concern timeouts. Everything else is permanent.

use crate::ports::store::StoreError;
use mongodb::error::{Error, ErrorKind, RETRYABLE_WRITE_ERROR, TRANSIENT_TRANSACTION_ERROR, WriteFailure};

/// Server codes that mean "try again": HostUnreachable 6, HostNotFound 7,
/// WriteConcernFailed 64, NetworkTimeout 89, ShutdownInProgress 91, WriteConflict 112,
/// PrimarySteppedDown 189, ExceededTimeLimit 262, SocketException 9001,
/// NotWritablePrimary 10107, InterruptedAtShutdown 11600, InterruptedDueToReplStateChange
/// 11602, NotPrimaryNoSecondaryOk 13435, NotPrimaryOrSecondary 13436.
pub(super) const TRANSIENT_CODES: &[i32] = &[6, 7, 64, 89, 91, 112, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436];

/// Duplicate key.
pub(super) const DUPLICATE_KEY: i32 = 11000;

pub(super) fn server_code(e: &Error) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
        ErrorKind::InsertMany(im) => im
            .write_errors
            .as_ref()
            .and_then(|v| v.first())
            .map(|w| w.code)
            .or_else(|| im.write_concern_error.as_ref().map(|w| w.code)),
        _ => None,
    }
}

pub(super) fn is_transient_code(code: i32) -> bool {
    TRANSIENT_CODES.contains(&code)
}

pub(super) fn map_err(e: Error) -> StoreError {
    let transient = matches!(
        e.kind.as_ref(),
        ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. } | ErrorKind::ServerSelection { .. }
    ) || e.contains_label(RETRYABLE_WRITE_ERROR)
        || e.contains_label(TRANSIENT_TRANSACTION_ERROR)
        || server_code(&e).is_some_and(is_transient_code);
    if transient {
        return StoreError::Io(format!("mongodb: {e}"));
    }
    match e.kind.as_ref() {
        ErrorKind::Authentication { .. } | ErrorKind::DnsResolve { .. } | ErrorKind::InvalidTlsConfig { .. } => {
            StoreError::Open(format!("mongodb: {e}"))
        }
        ErrorKind::BsonDeserialization(_) | ErrorKind::InvalidResponse { .. } => {
            StoreError::Corrupt(format!("mongodb: {e}"))
        }
        _ => StoreError::Rejected(format!("mongodb: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_conflict_and_primary_changes_are_transient() {
        for code in [112, 10107, 11602, 189, 91] {
            assert!(is_transient_code(code), "{code}");
        }
        assert!(!is_transient_code(DUPLICATE_KEY));
        assert!(!is_transient_code(121)); // document validation failure
    }
}
