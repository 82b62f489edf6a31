//! Full files in SQLite (`core::full`): the sweep after a file.

use super::lows::{Lows, any_below, raise};
use super::rows::map_err;
use crate::core::full::{Sweep, Swept};
use crate::ports::store::StoreError;
use rusqlite::{Connection, OptionalExtension, params};

/// Whether [`sweep`] reads or writes the records table for `s` (otherwise it only reads
/// what an earlier attempt of the same delivery removed).
pub(super) fn touches_records(conn: &Connection, s: &Sweep) -> Result<bool, StoreError> {
    Ok(s.raises_floor().is_some() || s.reports().is_some() || !types_at_or_above(conn, s)?.is_empty())
}

/// Types with a full file at or above the swept file: its lines, or what it did not
/// contain, may now be live below one.
fn types_at_or_above(conn: &Connection, s: &Sweep) -> Result<Vec<String>, StoreError> {
    conn.prepare_cached("SELECT DISTINCT rtype FROM full_files WHERE region = ?1 AND (v_date, v_seq) >= (?2, ?3)")
        .map_err(map_err)?
        .query_map(params![s.region, s.version.date_number(), s.version.seq], |r| r.get(0))
        .map_err(map_err)?
        .collect::<Result<_, _>>()
        .map_err(map_err)
}

/// The version of the newest full file of `region` that covers `rtype`.
fn newest_full(conn: &Connection, region: &str, rtype: &str) -> Result<Option<(u32, u64)>, StoreError> {
    conn.prepare_cached(
        "SELECT v_date, v_seq FROM full_files WHERE region = ?1 AND rtype = ?2 ORDER BY v_date DESC, v_seq DESC LIMIT 1",
    )
    .map_err(map_err)?
    .query_row(params![region, rtype], |r| Ok((r.get(0)?, r.get(1)?)))
    .optional()
    .map_err(map_err)
}

/// Sweeps a region after a file (`core::full`), inside the caller's transaction.
///
/// A record a full file removed keeps its last write (the version rule compares with it)
/// and shows as a tombstone of the earliest full file of its region after that write:
/// exactly what applying every file in version order would leave, whatever order the
/// files came in.
///
/// Live records are read only for a type whose low (`lows`) says the region may have one
/// below the version compared with, and tombstones only when a later full file of the
/// region (one that came first) exists. So a full file that comes in order costs what
/// its region holds of it, not what the whole store holds.
pub(super) fn sweep(conn: &Connection, lows: &mut Lows, s: &Sweep) -> Result<Swept, StoreError> {
    lows.write(conn)?; // the lows read below cover every record written so far
    let date = s.version.date_number();
    let here = (date, s.version.seq);
    if let Some(full) = s.raises_floor() {
        let mut register = conn
            .prepare_cached(
                "INSERT INTO full_files (region, rtype, v_date, v_seq, file) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (region, rtype, v_date, v_seq) DO NOTHING",
            )
            .map_err(map_err)?;
        // Records an even later full file removed, written before this one: in version
        // order this one removed them.
        let mut earlier = conn
            .prepare_cached(
                "UPDATE records SET s_date = ?3, s_seq = ?4, s_file = ?5
                 WHERE rtype = ?1 AND region = ?2 AND s_date IS NOT NULL
                   AND (s_date, s_seq) > (?3, ?4) AND (v_date, v_seq) < (?3, ?4)",
            )
            .map_err(map_err)?;
        for t in &full.record_types {
            register.execute(params![s.region, t, date, s.version.seq, s.file]).map_err(map_err)?;
            // Only a later full file can have removed a record (its tombstone carries
            // that file's version).
            if newest_full(conn, &s.region, t)?.is_some_and(|newest| newest > here) {
                earlier.execute(params![t, s.region, date, s.version.seq, s.file]).map_err(map_err)?;
            }
        }
    }
    let mut swept = Swept::default();
    if let Some(full) = s.reports() {
        let mut count = conn
            .prepare_cached(
                "SELECT count(*) FROM records WHERE rtype = ?1 AND region = ?2 AND deleted = 0
                   AND s_date IS NULL AND (v_date, v_seq) < (?3, ?4)",
            )
            .map_err(map_err)?;
        for t in &full.record_types {
            if any_below(conn, &s.region, t, here)? {
                let n: u64 =
                    count.query_row(params![t, s.region, date, s.version.seq], |r| r.get(0)).map_err(map_err)?;
                swept.reported += n;
            }
        }
    }
    let types = types_at_or_above(conn, s)?;
    let mut remove = conn
        .prepare_cached(
            "UPDATE records SET shape = NULL, field_values = NULL, (s_date, s_seq, s_file) = (
                 SELECT f.v_date, f.v_seq, f.file FROM full_files f
                 WHERE f.region = records.region AND f.rtype = records.rtype
                   AND (f.v_date, f.v_seq) > (records.v_date, records.v_seq)
                 ORDER BY f.v_date, f.v_seq LIMIT 1)
             WHERE rtype = ?1 AND region = ?2 AND deleted = 0 AND s_date IS NULL AND EXISTS (
                 SELECT 1 FROM full_files f WHERE f.region = records.region AND f.rtype = records.rtype
                   AND (f.v_date, f.v_seq) > (records.v_date, records.v_seq))",
        )
        .map_err(map_err)?;
    let mut removed = 0u64;
    for t in types {
        // Every live record below the type's newest full file goes.
        let Some(top) = newest_full(conn, &s.region, &t)? else { continue };
        if any_below(conn, &s.region, &t, top)? {
            removed += remove.execute(params![t, s.region]).map_err(map_err)? as u64;
            raise(conn, &s.region, &t, top)?;
        }
    }
    if removed > 0 {
        conn.prepare_cached(
            "INSERT INTO sweeps (file, generation, removed) VALUES (?1, ?2, ?3)
             ON CONFLICT (file, generation) DO UPDATE SET removed = removed + excluded.removed",
        )
        .map_err(map_err)?
        .execute(params![s.file, s.generation, removed])
        .map_err(map_err)?;
    }
    swept.removed = conn
        .prepare_cached("SELECT removed FROM sweeps WHERE file = ?1 AND generation = ?2")
        .map_err(map_err)?
        .query_row(params![s.file, s.generation], |r| r.get(0))
        .optional()
        .map_err(map_err)?
        .unwrap_or(0);
    Ok(swept)
}
