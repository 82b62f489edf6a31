//! The ledger: every object ever seen, and how each new listing changes it.
//!
//! Invariants:
//! - An object is identified by its *name* (the last key segment); a new upload of the
//!   same name is recognised by a changed fingerprint (modification time and size in a
//!   folder, ETag in S3) and then judged by its content (sha256):
//!   - same content as recorded → a **duplicate**: counted, nothing re-applied;
//!   - different content after the first was applied → a **conflict**: recorded with a
//!     `conflict:` reason, not applied;
//!   - different content for a quarantined or skipped file → validated afresh.
//! - A name not yet processed is simply replaced by its newer upload.

use crate::core::name::{FileName, NameProfile, NameVerdict};
use crate::core::record::Tally;
use chrono::{DateTime, Utc};
use std::fmt;

/// One object as a source lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub modified: DateTime<Utc>,
    /// Changes whenever the object is uploaded again (mtime+size, or the ETag).
    pub fingerprint: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileState {
    /// A valid name waiting for its turn (held, or about to be processed).
    Pending,
    /// Its records were applied.
    Applied,
    /// Every record was confirmed by the broker; consumers are applying them. For
    /// sequencing it counts as processed; it becomes `Applied` when the consumers'
    /// receipts account for every record line.
    Delivered,
    /// A bad name or a file-level fault: the reason says which.
    Quarantined,
    /// Its SEQ was skipped before it was applied.
    Skipped,
}

impl FileState {
    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Pending => "pending",
            FileState::Applied => "applied",
            FileState::Delivered => "delivered",
            FileState::Quarantined => "quarantined",
            FileState::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => FileState::Pending,
            "applied" => FileState::Applied,
            "delivered" => FileState::Delivered,
            "quarantined" => FileState::Quarantined,
            "skipped" => FileState::Skipped,
            _ => return None,
        })
    }
}

impl FileState {
    /// Applied, or handed to the broker in full: the stream may move past it.
    pub fn is_processed(self) -> bool {
        matches!(self, FileState::Applied | FileState::Delivered)
    }
}

impl fmt::Display for FileState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A later upload whose content differs from the applied one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub fingerprint: String,
    pub sha256: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// Everything recorded about one object name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    pub name: String,
    pub key: String,
    /// What the name says; `None` for a bad name.
    pub batch: Option<FileName>,
    pub size: u64,
    pub fingerprint: String,
    /// Known once the content was read.
    pub sha256: Option<String>,
    pub state: FileState,
    pub reason: Option<String>,
    pub conflict: Option<Conflict>,
    pub first_seen: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub record_lines: u64,
    pub tally: Tally,
    /// How many times its records were handed to a broker; message and receipt ids
    /// carry it, so a re-delivery (a backfill) is told apart from a retried one.
    pub generation: u32,
}

impl LedgerEntry {
    pub fn seq(&self) -> Option<u64> {
        self.batch.as_ref().map(|b| b.seq)
    }
    pub fn region(&self) -> Option<&str> {
        self.batch.as_ref().map(|b| b.region.as_str())
    }
}

/// What a listing says about one name, before any content is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// A name not seen before (pending, or quarantined for a bad name).
    New(LedgerEntry),
    /// Nothing changed since the last pass.
    Unchanged,
    /// A newer upload of a name not processed yet: the entry now points at it.
    Replaced(LedgerEntry),
    /// A newer upload of a processed name: hash it and call [`judge_upload`].
    NeedsContent,
}

/// Compares a listed object with its ledger entry (if any). Ignored keys must have been
/// filtered out with [`NameProfile::classify`] before.
pub fn observe(listed: &Listed, entry: Option<&LedgerEntry>, profile: &NameProfile, now: DateTime<Utc>) -> Observation {
    let Some(entry) = entry else {
        let (batch, state, reason, name) = match profile.classify(&listed.key) {
            NameVerdict::Batch(b) => (Some(b.clone()), FileState::Pending, None, b.name),
            NameVerdict::Bad { name, reason } => (None, FileState::Quarantined, Some(reason), name),
            NameVerdict::Ignored => return Observation::Unchanged,
        };
        return Observation::New(LedgerEntry {
            name,
            key: listed.key.clone(),
            batch,
            size: listed.size,
            fingerprint: listed.fingerprint.clone(),
            sha256: None,
            state,
            reason,
            conflict: None,
            first_seen: now,
            updated_at: now,
            record_lines: 0,
            tally: Tally::default(),
            generation: 0,
        });
    };
    let known = listed.fingerprint == entry.fingerprint
        || entry.conflict.as_ref().is_some_and(|c| c.fingerprint == listed.fingerprint);
    if known {
        return Observation::Unchanged;
    }
    if entry.state == FileState::Pending || entry.batch.is_none() {
        let mut e = entry.clone();
        e.key = listed.key.clone();
        e.size = listed.size;
        e.fingerprint = listed.fingerprint.clone();
        e.sha256 = None;
        e.updated_at = now;
        return Observation::Replaced(e);
    }
    Observation::NeedsContent
}

/// The verdict on a new upload of a processed name, once its content hash is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadVerdict {
    /// Same content: counted as a duplicate file, nothing else happens.
    Duplicate(LedgerEntry),
    /// New content for a quarantined or skipped file: pending again, validated afresh.
    Revalidate(LedgerEntry),
    /// New content after the file was applied: recorded, not applied.
    Conflict(LedgerEntry),
}

impl UploadVerdict {
    pub fn entry(&self) -> &LedgerEntry {
        match self {
            UploadVerdict::Duplicate(e) | UploadVerdict::Revalidate(e) | UploadVerdict::Conflict(e) => e,
        }
    }
}

pub fn judge_upload(entry: &LedgerEntry, listed: &Listed, sha256: &str, now: DateTime<Utc>) -> UploadVerdict {
    let mut e = entry.clone();
    e.updated_at = now;
    if entry.sha256.as_deref() == Some(sha256) {
        e.key = listed.key.clone();
        e.fingerprint = listed.fingerprint.clone();
        e.conflict = None; // the object is back to what was applied
        return UploadVerdict::Duplicate(e);
    }
    match entry.state {
        FileState::Applied | FileState::Delivered => {
            let applied = entry.sha256.as_deref().unwrap_or("unknown");
            e.conflict = Some(Conflict {
                fingerprint: listed.fingerprint.clone(),
                sha256: sha256.to_string(),
                reason: format!(
                    "conflict: {} was uploaded again with different content (sha256 {} instead of the applied {}); not applied",
                    entry.name,
                    short(sha256),
                    short(applied)
                ),
                at: now,
            });
            UploadVerdict::Conflict(e)
        }
        FileState::Quarantined | FileState::Skipped | FileState::Pending => {
            e.key = listed.key.clone();
            e.size = listed.size;
            e.fingerprint = listed.fingerprint.clone();
            e.sha256 = None;
            e.reason = None;
            e.state = FileState::Pending;
            UploadVerdict::Revalidate(e)
        }
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(key: &str, fp: &str) -> Listed {
        Listed { key: key.into(), size: 10, modified: Utc::now(), fingerprint: fp.into() }
    }

    fn new_entry(key: &str) -> LedgerEntry {
        match observe(&listed(key, "a"), None, &NameProfile::default(), Utc::now()) {
            Observation::New(e) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn new_names_are_pending_or_quarantined() {
        let e = new_entry("in/DE_SEV_RMC_20220730_00001157.DAT");
        assert_eq!((e.state, e.seq()), (FileState::Pending, Some(1157)));
        let bad = new_entry("in/DE_SEV_RMC_20220730_1157.DAT");
        assert_eq!(bad.state, FileState::Quarantined);
        assert!(bad.reason.unwrap().starts_with("bad name:"));
    }

    #[test]
    fn uploads_are_judged_by_content() {
        let mut e = new_entry("DE_SEV_RMC_20220730_00001157.DAT");
        let p = NameProfile::default();
        assert_eq!(observe(&listed(&e.key, "a"), Some(&e), &p, Utc::now()), Observation::Unchanged);
        assert!(matches!(observe(&listed(&e.key, "b"), Some(&e), &p, Utc::now()), Observation::Replaced(_)));
        e.state = FileState::Applied;
        e.sha256 = Some("s1".into());
        assert_eq!(observe(&listed(&e.key, "b"), Some(&e), &p, Utc::now()), Observation::NeedsContent);
        let dup = judge_upload(&e, &listed(&e.key, "b"), "s1", Utc::now());
        assert!(matches!(dup, UploadVerdict::Duplicate(ref d) if d.fingerprint == "b"));
        let UploadVerdict::Conflict(c) = judge_upload(&e, &listed(&e.key, "c"), "s2", Utc::now()) else { panic!() };
        assert!(c.conflict.as_ref().unwrap().reason.starts_with("conflict:"));
        assert_eq!(c.fingerprint, "a", "the applied object stays recorded");
        assert_eq!(observe(&listed(&e.key, "c"), Some(&c), &p, Utc::now()), Observation::Unchanged);
        e.state = FileState::Quarantined;
        assert!(
            matches!(judge_upload(&e, &listed(&e.key, "d"), "s3", Utc::now()), UploadVerdict::Revalidate(ref r) if r.state == FileState::Pending)
        );
    }
}
