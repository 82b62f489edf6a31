//! Records as they travel from the parser to a store.

use crate::core::version::Version;
use std::sync::Arc;

/// One parsed record line. Its identity is `(record_type, key)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub record_type: Arc<str>,
    pub key: String,
    /// `true` for a `D` line: stored as a tombstone that keeps its version.
    pub deleted: bool,
    pub version: Version,
    pub region: Arc<str>,
    pub file: Arc<str>,
    /// Named field values in layout order; empty for a tombstone.
    pub fields: Vec<(Arc<str>, String)>,
}

impl Record {
    /// The fields as a JSON object text in layout order (the stored and exported form).
    pub fn fields_json(&self) -> Option<String> {
        if self.deleted {
            return None;
        }
        let mut out = String::with_capacity(32 * self.fields.len() + 2);
        out.push('{');
        for (i, (name, value)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_string(&mut out, name);
            out.push(':');
            push_json_string(&mut out, value);
        }
        out.push('}');
        Some(out)
    }
}

fn push_json_string(out: &mut String, s: &str) {
    // serde_json's string escaping; writing into a String cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

/// A rejected line: kept with its file, line number and reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    pub file: Arc<str>,
    pub line: u64,
    pub reason: String,
    /// The line as read (invalid UTF-8 replaced), for the operator.
    pub raw: String,
}

/// What happened to the lines of one batch or file under the version rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub applied: u64,
    pub stale: u64,
    pub unchanged: u64,
    pub rejected: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Self) {
        self.applied += o.applied;
        self.stale += o.stale;
        self.unchanged += o.unchanged;
        self.rejected += o.rejected;
    }
}
