//! The lows: per region and record type, a version at or below that of every live record
//! of that region and type. They let a full file's sweep skip a region and type it has
//! nothing to remove in, instead of reading every record of the type.
//!
//! Invariant: for every live record (not deleted, not removed by a full file) of region
//! `R` and type `T`, table `lows` has a row `(R, T)` whose version (date, SEQ) is at or
//! below the record's. It is kept so:
//! - every record bound for writing is noted ([`Lows::note`], from
//!   `rows::execute_record`, the one function that binds a record's row), and the notes
//!   are written into the table ([`Lows::write`]) before a sweep reads it and before every
//!   commit of the writer, so no transaction commits a record without its low;
//! - a note only ever lowers a low, so a note of a line that was not written after all (a
//!   stale line, a staged line) or of a rolled-back transaction keeps the invariant;
//! - a low is raised only by the sweep that has just removed every live record of its
//!   region and type below the new low ([`raise`]).
//!
//! A store from before the table (schema version 3) gets a low of zero for every region
//! and type it holds when it is migrated: its first sweep of each reads it all, as before.

use super::rows::map_err;
use crate::core::record::Record;
use crate::ports::store::StoreError;
use rusqlite::{Connection, OptionalExtension, params};
use std::sync::Arc;

/// A version as the sweeps compare them: (date number, SEQ); the line does not count.
pub(super) type FileVersion = (u32, u64);

/// The lows noted since they were last written: a few entries (regions × types).
#[derive(Default)]
pub(super) struct Lows {
    noted: Vec<(Arc<str>, Arc<str>, FileVersion)>,
}

impl Lows {
    /// Notes that `r`, at `version` (its date number and SEQ), is (about to be) written.
    pub(super) fn note(&mut self, r: &Record, version: FileVersion) {
        let same = |(region, rtype, _): &&mut (Arc<str>, Arc<str>, FileVersion)| {
            (Arc::ptr_eq(region, &r.region) || *region == r.region)
                && (Arc::ptr_eq(rtype, &r.record_type) || *rtype == r.record_type)
        };
        match self.noted.iter_mut().find(same) {
            Some((_, _, low)) => *low = (*low).min(version),
            None => self.noted.push((r.region.clone(), r.record_type.clone(), version)),
        }
    }

    /// Forgets the notes (their records were rolled back).
    pub(super) fn clear(&mut self) {
        self.noted.clear();
    }

    /// Lowers the stored lows to the notes, inside the caller's transaction, and forgets
    /// them.
    pub(super) fn write(&mut self, conn: &Connection) -> Result<(), StoreError> {
        if self.noted.is_empty() {
            return Ok(());
        }
        let mut lower = conn
            .prepare_cached(
                "INSERT INTO lows (region, rtype, v_date, v_seq) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (region, rtype) DO UPDATE SET v_date = excluded.v_date, v_seq = excluded.v_seq
                 WHERE (excluded.v_date, excluded.v_seq) < (lows.v_date, lows.v_seq)",
            )
            .map_err(map_err)?;
        for (region, rtype, (date, seq)) in &self.noted {
            lower.execute(params![&**region, &**rtype, date, seq]).map_err(map_err)?;
        }
        self.noted.clear();
        Ok(())
    }
}

/// Whether `region` and `rtype` may have a live record below `version`: their stored low
/// is below it (no low: no live record). Only true once the notes are written
/// ([`Lows::write`]).
pub(super) fn any_below(
    conn: &Connection,
    region: &str,
    rtype: &str,
    version: FileVersion,
) -> Result<bool, StoreError> {
    let low: Option<FileVersion> = conn
        .prepare_cached("SELECT v_date, v_seq FROM lows WHERE region = ?1 AND rtype = ?2")
        .map_err(map_err)?
        .query_row(params![region, rtype], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(map_err)?;
    Ok(low.is_some_and(|low| low < version))
}

/// Live records below their region's and type's low, or with no low: 0 while the lows
/// hold (a full scan of the records, for tests and diagnosis).
pub(super) fn records_below_their_low(conn: &Connection) -> Result<u64, StoreError> {
    conn.query_row(
        "SELECT count(*) FROM records r LEFT JOIN lows l ON l.region = r.region AND l.rtype = r.rtype
         WHERE r.deleted = 0 AND r.s_date IS NULL
           AND (l.region IS NULL OR (r.v_date, r.v_seq) < (l.v_date, l.v_seq))",
        [],
        |r| r.get(0),
    )
    .map_err(map_err)
}

/// Raises the low of `region` and `rtype` to `version`: for the sweep that has just
/// removed every live record of them below it.
pub(super) fn raise(conn: &Connection, region: &str, rtype: &str, version: FileVersion) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE lows SET v_date = ?3, v_seq = ?4 WHERE region = ?1 AND rtype = ?2 AND (v_date, v_seq) < (?3, ?4)",
    )
    .map_err(map_err)?
    .execute(params![region, rtype, version.0, version.1])
    .map_err(map_err)?;
    Ok(())
}
