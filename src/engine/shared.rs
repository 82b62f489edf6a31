//! Read-modify-write of a shared document (JSON) by compare-and-set: the one way the
//! alert state and the list of live instances change.
//!
//! Invariant: a change is computed from the version it is written over; when another
//! writer got in first, nothing is written and the change is computed again from a fresh
//! read, at most [`ATTEMPTS`] times.

use crate::ports::store::{Store, StoreError};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Compare-and-set attempts before giving up with [`StoreError::Busy`].
pub const ATTEMPTS: usize = 8;

/// Reads `key` (the default value when absent), lets `change` modify it and returns what
/// `change` returns. `change` says whether to write: `(false, r)` leaves the document as
/// it is.
pub async fn update<T, R>(
    store: &dyn Store,
    key: &str,
    mut change: impl FnMut(&mut T) -> (bool, R),
) -> Result<R, StoreError>
where
    T: Serialize + DeserializeOwned + Default,
{
    for _ in 0..ATTEMPTS {
        let current = store.read_shared(key).await?;
        let mut value: T = match &current {
            Some(shared) => serde_json::from_str(&shared.value)
                .map_err(|e| StoreError::Corrupt(format!("shared document {key}: {e}")))?,
            None => T::default(),
        };
        let (write, result) = change(&mut value);
        if !write {
            return Ok(result);
        }
        let text = serde_json::to_string(&value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        if store.write_shared(key, current.map(|s| s.version), text).await?.is_some() {
            return Ok(result);
        }
    }
    Err(StoreError::Busy(format!("shared document {key} changed {ATTEMPTS} times in a row")))
}
