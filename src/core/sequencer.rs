//! The per-region sequencer: a synchronous state machine with no I/O.
//!
//! Invariants (checked by the property tests below and in `tests/`):
//! - A stream is one region. Once it has a baseline it expects `next_seq`; a file with
//!   SEQ n is applied only when every SEQ from the baseline up to n−1 is applied or skipped.
//! - The baseline is `sequence.start.<REGION>` if configured, else the lowest SEQ seen in
//!   the stream's first pass with files.
//! - A file above `next_seq` is **held**. A missing or quarantined `next_seq` with files
//!   waiting behind it is a **gap**: `waiting_since` is set when it starts, and the stream
//!   is flagged `gap_alert` once it has waited `gap_alert_after`. Gaps are passed only by
//!   an operator skip, or by the optional automatic skip after `auto_skip_after`.
//! - A file below `next_seq` that was never applied is **late**: it is applied (under the
//!   version rule) but never moves `next_seq` backwards.
//! - `waiting_since` always belongs to the current `next_seq`: it is cleared whenever the
//!   stream moves on.
//! - The automatic skip never passes more than [`MAX_AUTO_SKIP`] SEQs at once: a wider gap
//!   (a mistyped SEQ, say) needs an operator.

use crate::core::ledger::FileState;
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::{BTreeMap, BTreeSet};

/// The widest gap the automatic skip passes; a wider one stays flagged for an operator.
pub const MAX_AUTO_SKIP: u64 = 100;

/// Sequencing settings (validated configuration).
#[derive(Clone, Debug)]
pub struct SequenceRules {
    pub gap_alert_after: TimeDelta,
    pub auto_skip_after: Option<TimeDelta>,
    pub start: BTreeMap<String, u64>,
}

impl Default for SequenceRules {
    fn default() -> Self {
        Self { gap_alert_after: TimeDelta::hours(26), auto_skip_after: None, start: BTreeMap::new() }
    }
}

/// The persisted part of a stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamRecord {
    pub region: String,
    pub next_seq: Option<u64>,
    pub waiting_since: Option<DateTime<Utc>>,
    /// Every SEQ skipped by an operator or automatically.
    pub skipped: BTreeSet<u64>,
}

/// What the sequencer wants done next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Apply {
    pub name: String,
    pub seq: u64,
    /// Below `next_seq` and never applied: applied without moving the stream.
    pub late: bool,
}

/// Why a stream is not moving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Awaiting {
    /// No object with the expected SEQ has arrived.
    Missing(u64),
    /// The expected SEQ's file is quarantined.
    Quarantined { seq: u64, file: String },
}

/// A read-only view for status reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamView {
    pub region: String,
    pub next_seq: Option<u64>,
    pub held: Vec<u64>,
    pub waiting_since: Option<DateTime<Utc>>,
    pub gap_alert: bool,
    pub awaiting: Option<Awaiting>,
    pub skipped: Vec<u64>,
}

/// One region's stream.
#[derive(Clone, Debug)]
pub struct Stream {
    record: StreamRecord,
    /// seq → name → state, for every valid-named file of the region.
    files: BTreeMap<u64, BTreeMap<String, FileState>>,
}

impl Stream {
    pub fn new(record: StreamRecord) -> Self {
        Self { record, files: BTreeMap::new() }
    }

    pub fn region(&self) -> &str {
        &self.record.region
    }

    pub fn record(&self) -> &StreamRecord {
        &self.record
    }

    pub fn next_seq(&self) -> Option<u64> {
        self.record.next_seq
    }

    /// Tells the stream about a file and its ledger state (replacing what it knew).
    pub fn observe(&mut self, name: &str, seq: u64, state: FileState) {
        self.files.entry(seq).or_default().insert(name.to_string(), state);
    }

    /// Whether any file of the region was observed (a baseline needs one, or a start).
    pub fn has_files(&self) -> bool {
        !self.files.is_empty()
    }

    /// Gives a stream with no history its baseline. Returns true when it changed.
    pub fn ensure_baseline(&mut self, configured_start: Option<u64>) -> bool {
        if self.record.next_seq.is_some() {
            return false;
        }
        let lowest = self.files.keys().next().copied();
        let Some(start) = configured_start.or(lowest) else { return false };
        self.record.next_seq = Some(start);
        self.pass_done_seqs();
        true
    }

    /// The next file to apply: late files first (lowest SEQ first), then the expected one.
    pub fn next_action(&self) -> Option<Apply> {
        let next = self.record.next_seq?;
        let pending = |seq: u64, files: &BTreeMap<String, FileState>| {
            files.iter().find(|(_, s)| **s == FileState::Pending).map(|(name, _)| (seq, name.clone()))
        };
        if let Some((seq, name)) = self.files.range(..next).find_map(|(seq, f)| pending(*seq, f)) {
            return Some(Apply { name, seq, late: true });
        }
        let (seq, name) = self.files.get(&next).and_then(|f| pending(next, f))?;
        Some(Apply { name, seq, late: false })
    }

    /// Records that a file was applied and advances the stream past it if it was expected.
    pub fn applied(&mut self, name: &str, seq: u64) {
        self.observe(name, seq, FileState::Applied);
        if Some(seq) == self.record.next_seq {
            self.pass_done_seqs();
        }
    }

    /// Records that a file was quarantined: the stream stays at its SEQ, unless that SEQ
    /// was skipped already (the file came after the skip): then it is passed as skipped.
    pub fn quarantined(&mut self, name: &str, seq: u64) {
        self.observe(name, seq, FileState::Quarantined);
        if Some(seq) == self.record.next_seq && self.record.skipped.contains(&seq) {
            self.pass_done_seqs();
        }
    }

    /// Skips a SEQ. Returns the files at that SEQ that were waiting or quarantined and
    /// are now `Skipped` (the caller records that in the ledger).
    pub fn skip(&mut self, seq: u64) -> Vec<String> {
        self.record.skipped.insert(seq);
        let mut changed = Vec::new();
        if let Some(files) = self.files.get_mut(&seq) {
            for (name, state) in files.iter_mut() {
                if matches!(state, FileState::Pending | FileState::Quarantined) {
                    *state = FileState::Skipped;
                    changed.push(name.clone());
                }
            }
        }
        if Some(seq) == self.record.next_seq {
            self.pass_done_seqs();
        }
        changed
    }

    /// Brings `next_seq` up to date after the stream was rebuilt from the store (a skip
    /// or a backfill may have completed SEQs since it was saved).
    pub fn settle(&mut self) {
        self.pass_done_seqs();
    }

    /// Moves `next_seq` past every SEQ that is done: skipped, or applied with nothing
    /// at that SEQ still pending.
    fn pass_done_seqs(&mut self) {
        let Some(start) = self.record.next_seq else { return };
        let mut next = start;
        loop {
            let files = self.files.get(&next);
            let any_pending = files.is_some_and(|f| f.values().any(|s| *s == FileState::Pending));
            let any_applied = files.is_some_and(|f| f.values().any(|s| *s == FileState::Applied));
            if any_pending {
                break;
            }
            if self.record.skipped.contains(&next) || any_applied {
                next += 1;
            } else {
                break;
            }
        }
        if next != start {
            // A new expected SEQ: any wait starts afresh (`refresh` sets it again).
            self.record.waiting_since = None;
        }
        self.record.next_seq = Some(next);
    }

    fn awaiting(&self) -> Option<Awaiting> {
        let next = self.record.next_seq?;
        let at_next = self.files.get(&next);
        if at_next.is_some_and(|f| f.values().any(|s| *s == FileState::Pending)) {
            return None; // it is about to be applied
        }
        // Any later file means the expected SEQ is a gap (even one already applied by a
        // backfill: the stream still has not seen `next`).
        let waiting_behind = self.files.range(next + 1..).any(|(_, f)| !f.is_empty());
        let quarantined =
            at_next.and_then(|f| f.iter().find(|(_, s)| **s == FileState::Quarantined).map(|(n, _)| n.clone()));
        match quarantined {
            Some(file) => Some(Awaiting::Quarantined { seq: next, file }),
            None if waiting_behind => Some(Awaiting::Missing(next)),
            None => None,
        }
    }

    /// Updates `waiting_since` at `now` and applies the automatic skip if configured.
    /// Returns the SEQs skipped automatically (empty when the gap is wider than
    /// [`MAX_AUTO_SKIP`]: see [`Stream::auto_skip_refused`]).
    pub fn refresh(&mut self, now: DateTime<Utc>, rules: &SequenceRules) -> Vec<u64> {
        let awaiting = self.awaiting();
        if awaiting.is_none() {
            self.record.waiting_since = None;
            return Vec::new();
        }
        let since = *self.record.waiting_since.get_or_insert(now);
        let (Some(after), Some(Awaiting::Missing(missing))) = (rules.auto_skip_after, awaiting) else {
            return Vec::new();
        };
        if now - since < after {
            return Vec::new();
        }
        let first_waiting = self.files.range(missing + 1..).next().map_or(missing + 1, |(seq, _)| *seq);
        if first_waiting - missing > MAX_AUTO_SKIP {
            return Vec::new();
        }
        let skipped: Vec<u64> = (missing..first_waiting).collect();
        for seq in &skipped {
            self.skip(*seq);
        }
        self.record.waiting_since = None;
        skipped
    }

    /// The width of the current gap when it is due for the automatic skip but too wide
    /// for it.
    pub fn auto_skip_refused(&self, now: DateTime<Utc>, rules: &SequenceRules) -> Option<u64> {
        let (Some(after), Some(since), Some(Awaiting::Missing(missing))) =
            (rules.auto_skip_after, self.record.waiting_since, self.awaiting())
        else {
            return None;
        };
        let first_waiting = self.files.range(missing + 1..).next().map(|(seq, _)| *seq)?;
        (now - since >= after && first_waiting - missing > MAX_AUTO_SKIP).then_some(first_waiting - missing)
    }

    pub fn view(&self, now: DateTime<Utc>, rules: &SequenceRules) -> StreamView {
        let next = self.record.next_seq;
        let held = match next {
            Some(n) => self
                .files
                .range(n + 1..)
                .filter(|(_, f)| f.values().any(|s| *s == FileState::Pending))
                .map(|(seq, _)| *seq)
                .collect(),
            None => self.files.keys().copied().collect(),
        };
        let waiting_since = self.record.waiting_since;
        StreamView {
            region: self.record.region.clone(),
            next_seq: next,
            held,
            waiting_since,
            gap_alert: waiting_since.is_some_and(|t| now - t >= rules.gap_alert_after),
            awaiting: self.awaiting(),
            skipped: self.record.skipped.iter().copied().collect(),
        }
    }
}

#[cfg(test)]
mod tests;
