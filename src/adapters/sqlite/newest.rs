//! Several files in one unit of work: each identity is written once, at the end.
//!
//! When a transaction takes a region's consecutive files ([`crate::ports::store::FileTxn::next_file`]),
//! lines are decided in memory against the newest version known for their identity: the
//! stored one (read once, when the identity is first seen) or the newest line applied
//! since in the unit. Each line gets exactly the outcome (applied,
//! stale, unchanged) it would get from a conditional upsert run at that moment, because
//! that upsert compares with the same version (`core::version::decide`). Only the newest
//! line of each identity is written, by [`Newest::flush`], before anything reads the
//! records table (a sweep that touches records, a staged file's merge) and at commit; the
//! row it leaves is the one the sequence of upserts would have left, since an upsert
//! overwrites every column but the identity.
//!
//! Memory: one entry per identity seen since the last flush, and a flush comes once
//! there are [`NEWEST_KEPT`] of them or the lines held add up to [`NEWEST_BYTES`].

use super::rows::{APPLY_ONE, Writes, execute_record, map_err, stored_version};
use crate::core::record::{Record, Tally};
use crate::core::version::{Decision, Version, decide};
use crate::ports::store::StoreError;
use hashbrown::hash_map::EntryRef;
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Identities kept in memory before they are written anyway...
pub(super) const NEWEST_KEPT: usize = 100_000;
/// ...and the bytes of the lines held for them (keys and values, plus a fixed cost each).
pub(super) const NEWEST_BYTES: usize = 8 << 20;
/// What a held line costs besides its key and values (the record and the map entry).
const LINE_OVERHEAD: usize = 160;

/// What is known of one identity in the unit of work.
struct Known {
    /// The newest version: stored, or of a line decided since.
    version: Option<Version>,
    /// The line to write at the next flush, when a line since the last one was applied.
    write: Option<Record>,
}

/// The newest known version of each identity seen since the last flush, by record type
/// and key (a line is looked up by its key as it is: only a new identity's key is copied).
#[derive(Default)]
pub(super) struct Newest {
    known: BTreeMap<Arc<str>, hashbrown::HashMap<String, Known>>,
    /// What the lines to write take, about.
    held_bytes: usize,
}

fn held_size(r: &Record) -> usize {
    LINE_OVERHEAD + 2 * r.key.len() + r.fields.as_ref().map_or(0, |f| f.values_json.len())
}

impl Newest {
    pub(super) fn is_empty(&self) -> bool {
        self.known.is_empty() // a type's map is made with its first identity
    }

    /// Decides each line of `batch` in order, adding its outcome to `tally`.
    pub(super) fn decide(
        &mut self,
        conn: &Connection,
        writes: &mut Writes,
        batch: Vec<Record>,
        tally: &mut Tally,
    ) -> Result<(), StoreError> {
        let mut read = conn
            .prepare_cached("SELECT v_date, v_seq, v_line FROM records WHERE rtype = ?1 AND key = ?2")
            .map_err(map_err)?;
        for r in batch {
            let by_key = match self.known.get_mut(&*r.record_type) {
                Some(by_key) => by_key,
                None => self.known.entry(r.record_type.clone()).or_default(),
            };
            let known = match by_key.entry_ref(r.key.as_str()) {
                EntryRef::Occupied(o) => o.into_mut(),
                EntryRef::Vacant(v) => v.insert(Known { version: stored_version(&mut read, &r)?, write: None }),
            };
            match decide(known.version, r.version) {
                Decision::Apply => {
                    tally.applied += 1;
                    known.version = Some(r.version);
                    self.held_bytes += held_size(&r);
                    if let Some(replaced) = known.write.replace(r) {
                        self.held_bytes -= held_size(&replaced);
                    }
                }
                Decision::Stale => tally.stale += 1,
                Decision::Same => tally.unchanged += 1,
            }
        }
        drop(read);
        let identities: usize = self.known.values().map(hashbrown::HashMap::len).sum();
        if identities > NEWEST_KEPT || self.held_bytes > NEWEST_BYTES {
            self.flush(conn, writes)?;
        }
        Ok(())
    }

    /// Writes the newest applied line of every identity, in identity order (a forward
    /// walk through the records B-tree), and forgets what it knew.
    pub(super) fn flush(&mut self, conn: &Connection, writes: &mut Writes) -> Result<(), StoreError> {
        let mut write = conn.prepare_cached(APPLY_ONE).map_err(map_err)?;
        // Types in order, then keys in order within each: identity order.
        for by_key in std::mem::take(&mut self.known).into_values() {
            let mut lines: Vec<Record> = by_key.into_values().filter_map(|k| k.write).collect();
            lines.sort_unstable_by(|a, b| a.key.cmp(&b.key));
            for r in &lines {
                if execute_record(&mut write, writes, conn, r)? != 1 {
                    return Err(StoreError::Corrupt(format!(
                        "record {} {}: version {:?} was decided newer but not written",
                        r.record_type, r.key, r.version
                    )));
                }
            }
        }
        self.held_bytes = 0;
        Ok(())
    }
}
