//! Reading numbers back from BSON: servers (and the wire stand-in) may answer with
//! Int32, Int64 or Double for the same field, so every reader accepts all three.

use mongodb::bson::{Bson, Document};

pub(super) fn int(b: Option<&Bson>) -> Option<i64> {
    match b? {
        Bson::Int32(v) => Some(i64::from(*v)),
        Bson::Int64(v) => Some(*v),
        Bson::Double(v) => Some(*v as i64),
        _ => None,
    }
}

/// A non-negative count field; 0 when absent or not a number.
pub(super) fn unsigned(d: &Document, k: &str) -> u64 {
    int(d.get(k)).and_then(|v| u64::try_from(v).ok()).unwrap_or(0)
}

/// A count for storing (BSON has no unsigned 64-bit integer).
pub(super) fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
