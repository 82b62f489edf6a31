//! The names the ledger knows, remembered between passes, so a pass that is not full does
//! not read every name of the history from the store (see [`super::Scope`]).
//!
//! Invariant: what is remembered is not *ahead* of the store. It is filled only by a
//! full read of the store's known names and by what the store confirmed since: commits
//! that returned, and entries read back (`ledger_lookup`); ledger entries are never
//! deleted. So it can lack a name or hold an older fingerprint, and a pass treats both
//! safely: a name it lacks is looked up by name before it is judged new, and a
//! fingerprint that differs from the listing's makes the entry be read. A full pass (and
//! a pass over keys that lists everything) reads the store again.
//!
//! Where a returned commit is not what the store keeps, the remembered name can be
//! ahead until that read: on MongoDB, a fenced copy dropped for a newer owner's entry (a
//! region this instance no longer drives), or a write acknowledged below a majority and
//! rolled back (the default write concern is `majority`). A quick pass then leaves that
//! name out as settled, as it leaves out any settled file uploaded again: until the next
//! full pass, at most `reconcile_interval`.
//!
//! Memory: one entry per known name (the full read holds the same for the length of a
//! pass); what was added since the last full read is bounded by [`ADDED_AT_MOST`], past
//! which everything is forgotten and the next pass reads the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The most names remembered on top of the last full read; past it, all is forgotten.
pub(super) const ADDED_AT_MOST: usize = 100_000;

/// Every known name with the fingerprint it is known by, as one pass sees it.
#[derive(Clone, Debug, Default)]
pub(super) struct Known {
    read: Arc<HashMap<String, String>>,
    added: Arc<HashMap<String, String>>,
    /// Whether this came from memory rather than a read of the store in this pass: a name
    /// missing here may be known to the store (written by another process meanwhile).
    pub remembered: bool,
}

impl Known {
    /// What the store's full read returned.
    pub fn read(names: HashMap<String, String>) -> Self {
        Known { read: Arc::new(names), added: Arc::default(), remembered: false }
    }

    /// The fingerprint `name` is known by, if it is known.
    pub fn get(&self, name: &str) -> Option<&String> {
        self.added.get(name).or_else(|| self.read.get(name))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// What the engine remembers between passes (see the module docs).
#[derive(Debug, Default)]
pub struct KnownNames {
    state: Mutex<Remembered>,
}

#[derive(Debug, Default)]
struct Remembered {
    read: Option<Arc<HashMap<String, String>>>,
    added: HashMap<String, String>,
}

impl KnownNames {
    /// Everything remembered, if a full read was made and not forgotten since.
    pub(super) fn recall(&self) -> Option<Known> {
        let state = self.lock();
        let read = state.read.clone()?;
        Some(Known { read, added: Arc::new(state.added.clone()), remembered: true })
    }

    /// Forgets everything; called *before* a full read of the store, so nothing confirmed
    /// before the read is kept beside it (the read holds it, or it is looked up).
    pub(super) fn start_full_read(&self) {
        *self.lock() = Remembered::default();
    }

    /// Keeps the result of a full read (started by [`KnownNames::start_full_read`]). A
    /// commit confirmed while the read ran is not remembered: it is looked up when listed.
    pub(super) fn keep_full_read(&self, known: &Known) {
        *self.lock() = Remembered { read: Some(known.read.clone()), added: HashMap::new() };
    }

    /// Remembers (name, fingerprint) of ledger entries the store confirmed (written, or
    /// read back).
    pub(super) fn confirmed<'a>(&self, entries: impl IntoIterator<Item = (&'a String, &'a String)>) {
        let mut state = self.lock();
        if state.read.is_none() {
            return; // nothing to add to: the next pass that is not full reads the store
        }
        for (name, fingerprint) in entries {
            state.added.insert(name.clone(), fingerprint.clone());
        }
        if state.added.len() > ADDED_AT_MOST {
            *state = Remembered::default();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Remembered> {
        // A panic while holding this lock leaves only a map of names behind, still valid.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ledger::LedgerEntry;

    fn entry(name: &str, fingerprint: &str) -> LedgerEntry {
        let at = chrono::DateTime::UNIX_EPOCH;
        LedgerEntry {
            name: name.into(),
            key: name.into(),
            batch: None,
            size: 1,
            fingerprint: fingerprint.into(),
            sha256: None,
            state: crate::core::ledger::FileState::Applied,
            reason: None,
            conflict: None,
            first_seen: at,
            updated_at: at,
            record_lines: 0,
            tally: Default::default(),
            generation: 0,
            counted: true,
        }
    }

    fn pairs(entries: &[LedgerEntry]) -> impl Iterator<Item = (&String, &String)> {
        entries.iter().map(|e| (&e.name, &e.fingerprint))
    }

    #[test]
    fn nothing_is_recalled_before_a_full_read() {
        let k = KnownNames::default();
        k.confirmed(pairs(&[entry("A", "1")]));
        assert!(k.recall().is_none());
    }

    #[test]
    fn a_recall_is_the_full_read_and_what_was_confirmed_since() {
        let k = KnownNames::default();
        k.start_full_read();
        k.keep_full_read(&Known::read(HashMap::from([("A".into(), "1".into()), ("B".into(), "2".into())])));
        k.confirmed(pairs(&[entry("B", "3"), entry("C", "4")]));
        let known = k.recall().expect("a full read was kept");
        assert!(known.remembered);
        assert_eq!(known.get("A").map(String::as_str), Some("1"));
        assert_eq!(known.get("B").map(String::as_str), Some("3"), "a confirmed write is newer than the read");
        assert_eq!(known.get("C").map(String::as_str), Some("4"));
        assert!(!known.contains("D"));
    }

    #[test]
    fn past_the_bound_everything_is_forgotten() {
        let k = KnownNames::default();
        k.start_full_read();
        k.keep_full_read(&Known::read(HashMap::new()));
        let many: Vec<LedgerEntry> = (0..=ADDED_AT_MOST).map(|i| entry(&format!("N{i}"), "f")).collect();
        k.confirmed(pairs(&many));
        assert!(k.recall().is_none());
    }
}
