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
    /// Why the object cannot be read at all (not a regular file, a dangling link, a
    /// folder that cannot be opened): it is recorded and quarantined with this reason,
    /// never opened, and every other object goes on.
    pub problem: Option<String>,
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
    /// The file is counted in `applied_files`: set the first time it became applied, and
    /// kept (a backfill or a re-upload applies it again without counting it again).
    pub counted: bool,
}

impl LedgerEntry {
    /// Points the entry at a newer upload whose content is not known yet.
    fn point_at(&mut self, listed: &Listed, now: DateTime<Utc>) {
        self.key = listed.key.clone();
        self.size = listed.size;
        self.fingerprint = listed.fingerprint.clone();
        self.sha256 = None;
        self.conflict = None;
        self.updated_at = now;
    }

    /// The content (sha256) of a delivery of this file that started and has not
    /// finished: a pending entry that already has a digest.
    pub fn unfinished_delivery(&self) -> Option<&str> {
        (self.state == FileState::Pending).then_some(self.sha256.as_deref()).flatten()
    }

    /// Whether the entry is *settled*: nothing a pass, `status` or an alert derives from
    /// the active state can change because of it, so they never read it. `next_seq` is
    /// the stored expected SEQ of the entry's region.
    ///
    /// Invariant: a settled entry is a validly named file, applied (or skipped once its
    /// content is known) with no open conflict, strictly below its region's expected
    /// SEQ. The sequencer only looks at waiting files below `next_seq` and at every file
    /// from `next_seq` on, so leaving settled entries out changes none of its decisions
    /// (`tests/active_ledger.rs` checks this against the whole ledger). Every other
    /// entry is *active*: held, in flight, quarantined, in conflict, or not yet behind
    /// its stream. The active part stays small however long the history grows.
    pub fn is_settled(&self, next_seq: Option<u64>) -> bool {
        let (Some(batch), Some(next)) = (&self.batch, next_seq) else { return false };
        let done = match self.state {
            FileState::Applied => true,
            FileState::Skipped => self.sha256.is_some(),
            FileState::Pending | FileState::Delivered | FileState::Quarantined => false,
        };
        done && self.conflict.is_none() && batch.seq < next
    }

    /// Whether a pass may read this entry's object without a new upload of it: a batch
    /// file pending (held, or next), delivered (its consumers still applying) or skipped
    /// before its content was known. Every other active entry (a bad name, a quarantined
    /// file, an applied file with a conflicting upload) changes only with a new upload of
    /// its own, which a notification or a listing brings, or by an operator; so a pass
    /// over notified keys looks up only these, and however many bad names and conflicts
    /// pile up in the source, such a pass stays a lookup rather than a full listing.
    pub fn awaits_a_pass(&self) -> bool {
        self.batch.is_some()
            && match self.state {
                FileState::Pending | FileState::Delivered => true,
                FileState::Skipped => self.sha256.is_none(),
                FileState::Applied | FileState::Quarantined => false,
            }
    }

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
        // An object that cannot be read at all is named for that, whatever its name.
        let reason = match (&listed.problem, &batch) {
            (Some(problem), None) => Some(format!("unreadable object: {problem}")),
            _ => reason,
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
            counted: false,
        });
    };
    let known = listed.fingerprint == entry.fingerprint
        || entry.conflict.as_ref().is_some_and(|c| c.fingerprint == listed.fingerprint);
    if entry.batch.is_none() {
        return rejudge_bad_name(listed, entry, known, profile, now);
    }
    if known {
        return Observation::Unchanged;
    }
    // A pending file whose delivery started (it has a digest) is judged by content, like a
    // processed one: its earlier content may be partly applied.
    if entry.state == FileState::Pending && entry.sha256.is_none() {
        let mut e = entry.clone();
        e.point_at(listed, now);
        return Observation::Replaced(e);
    }
    Observation::NeedsContent
}

/// A bad name is judged again on every pass with the current profile: a widened pattern
/// turns it into a pending batch file with no re-upload needed.
fn rejudge_bad_name(
    listed: &Listed,
    entry: &LedgerEntry,
    known: bool,
    profile: &NameProfile,
    now: DateTime<Utc>,
) -> Observation {
    let mut e = entry.clone();
    match profile.classify(&listed.key) {
        NameVerdict::Batch(batch) => {
            e.batch = Some(batch);
            e.state = FileState::Pending;
            e.reason = None;
            // It claims its SEQ from now on: a name that claimed it meanwhile came first.
            e.first_seen = now;
        }
        NameVerdict::Bad { reason, .. } => {
            let reason = match &listed.problem {
                Some(problem) => format!("unreadable object: {problem}"),
                None => reason,
            };
            if known && entry.reason.as_deref() == Some(reason.as_str()) {
                return Observation::Unchanged;
            }
            e.reason = Some(reason);
        }
        NameVerdict::Ignored => return Observation::Unchanged,
    }
    e.point_at(listed, now);
    Observation::Replaced(e)
}

/// Which of the names claiming one SEQ of one region owns it: the first claimant, by
/// when it was first seen, then by name (names discovered in one pass are recorded in
/// name order). Every other claimant is a `conflict:` (or a duplicate, when its bytes are
/// the owner's); the stream never passes the SEQ on the strength of one of them.
pub fn seq_owner<'a>(claimants: impl IntoIterator<Item = &'a LedgerEntry>) -> Option<&'a LedgerEntry> {
    claimants
        .into_iter()
        .filter(|e| e.batch.is_some())
        .min_by(|a, b| (a.first_seen, &a.name).cmp(&(b.first_seen, &b.name)))
}

/// The ledger entry of a second claimant of `owner`'s SEQ, once both contents are known:
/// skipped as a duplicate when the bytes are the same, otherwise quarantined as a conflict
/// naming the owner. Returns the entry and whether it is a duplicate.
pub fn judge_second_claim(
    entry: &LedgerEntry,
    owner: &LedgerEntry,
    sha256: &str,
    owner_sha256: Option<&str>,
    now: DateTime<Utc>,
) -> (LedgerEntry, bool) {
    let mut e = entry.clone();
    e.sha256 = Some(sha256.to_string());
    e.updated_at = now;
    let (seq, region) = (entry.seq().unwrap_or_default(), entry.region().unwrap_or_default());
    let duplicate = owner_sha256 == Some(sha256);
    if duplicate {
        e.state = FileState::Skipped;
        e.reason = Some(format!("duplicate: same content as {}, which claimed {region} SEQ {seq} first", owner.name));
    } else {
        e.state = FileState::Quarantined;
        e.reason = Some(format!(
            "conflict: {region} SEQ {seq} is already claimed by {} ({}); {} is not applied",
            owner.name, owner.state, entry.name
        ));
    }
    (e, duplicate)
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
        if entry.state == FileState::Quarantined && entry.conflict.is_some() {
            // The content of an interrupted delivery is back: it may be finished.
            e.state = FileState::Pending;
            e.reason = None;
        }
        return UploadVerdict::Duplicate(e);
    }
    // A delivery that stopped half-way (pending with a digest), or one already found
    // replaced: other content can no longer be applied cleanly.
    let interrupted =
        entry.state == FileState::Pending || (entry.state == FileState::Quarantined && entry.conflict.is_some());
    if interrupted {
        let started = entry.sha256.as_deref().unwrap_or("unknown");
        return UploadVerdict::Conflict(interrupted_conflict(entry, started, sha256, listed, now));
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
            e.point_at(listed, now);
            e.reason = None;
            e.state = FileState::Pending;
            UploadVerdict::Revalidate(e)
        }
    }
}

/// The entry of a pending file whose delivery of content `started` stopped half-way and
/// which now holds other content (`found`): quarantined as a conflict, since records of the
/// earlier content may be applied already. Uploading the earlier content again finishes
/// it; `sequence skip` passes it.
pub fn interrupted_conflict(
    entry: &LedgerEntry,
    started: &str,
    found: &str,
    listed: &Listed,
    now: DateTime<Utc>,
) -> LedgerEntry {
    let reason = format!(
        "conflict: {} was replaced with different content (sha256 {}) after a delivery of its earlier content \
         (sha256 {}) had started, so records of the earlier content may be applied; not applied. Upload the \
         earlier content again to finish it, or skip the SEQ",
        entry.name,
        short(found),
        short(started)
    );
    let mut e = entry.clone();
    e.state = FileState::Quarantined;
    e.reason = Some(reason.clone());
    e.conflict = Some(Conflict { fingerprint: listed.fingerprint.clone(), sha256: found.to_string(), reason, at: now });
    e.updated_at = now;
    e
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(key: &str, fp: &str) -> Listed {
        Listed { key: key.into(), size: 10, modified: Utc::now(), fingerprint: fp.into(), problem: None }
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
