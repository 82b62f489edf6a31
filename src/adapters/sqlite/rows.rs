//! Mapping between store rows and core types, and the statements every write shares.

use super::lows::Lows;
use crate::core::lease::{Fence, Lease};
use crate::core::ledger::{Conflict, FileState, LedgerEntry};
use crate::core::name::FileName;
use crate::core::record::{FieldNames, Record, Reject, Tally, object_json};
use crate::core::sequencer::StreamRecord;
use crate::core::version::{Decision, Version, decide, decide_in_order};
use crate::ports::store::{AuditEntry, Commit, DeadLetter, DeliveredBatch, FileTicket, StoreError, StoredRecord};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::collections::HashMap;

/// Classifies SQLite errors: only a busy database and I/O-level failures are worth
/// retrying; a corrupt database, a constraint or type violation, or a mistake in a
/// statement would fail the same way again.
pub(super) fn map_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    let text = e.to_string();
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            C::DatabaseBusy | C::DatabaseLocked => StoreError::Busy(text),
            C::SystemIoFailure | C::DiskFull | C::OutOfMemory | C::CannotOpen | C::FileLockingProtocolFailed => {
                StoreError::Io(text)
            }
            C::DatabaseCorrupt | C::NotADatabase => StoreError::Corrupt(text),
            _ => StoreError::Rejected(text),
        },
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::Corrupt(text),
        _ => StoreError::Rejected(text),
    }
}

pub(super) fn time(s: Option<String>) -> Result<Option<DateTime<Utc>>, StoreError> {
    s.map(|s| {
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| StoreError::Corrupt(format!("timestamp {s:?}: {e}")))
    })
    .transpose()
}

pub(super) fn text_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub(super) const OBJECT_COLUMNS: &str = "name, key, region, kind, file_date, seq, size, fingerprint, sha256, state, reason, \
     conflict_fingerprint, conflict_sha256, conflict_reason, conflict_at, first_seen, updated_at, \
     record_lines, records_applied, records_stale, records_unchanged, records_rejected, generation, \
     records_dead_lettered, counted, records_removed, records_ignored";

pub(super) fn load_ledger(conn: &Connection) -> Result<Vec<LedgerEntry>, StoreError> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {OBJECT_COLUMNS} FROM objects ORDER BY name")).map_err(map_err)?;
    collect_objects(stmt.query_map([], read_object).map_err(map_err)?)
}

/// The ledger entries in one state, by name.
pub(super) fn load_ledger_in(conn: &Connection, state: FileState) -> Result<Vec<LedgerEntry>, StoreError> {
    let sql = format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE state = ?1 ORDER BY name");
    let mut stmt = conn.prepare_cached(&sql).map_err(map_err)?;
    collect_objects(stmt.query_map(params![state.as_str()], read_object).map_err(map_err)?)
}

pub(super) fn collect_objects(
    rows: impl Iterator<Item = RowResult<LedgerEntry>>,
) -> Result<Vec<LedgerEntry>, StoreError> {
    let mut out = Vec::new();
    for row in rows {
        out.push(row.map_err(map_err)??);
    }
    Ok(out)
}

pub(super) type RowResult<T> = rusqlite::Result<Result<T, StoreError>>;

pub(super) fn read_object(r: &Row<'_>) -> RowResult<LedgerEntry> {
    let name: String = r.get(0)?;
    let region: Option<String> = r.get(2)?;
    let kind: Option<String> = r.get(3)?;
    let file_date: Option<u32> = r.get(4)?;
    let seq: Option<u64> = r.get(5)?;
    let state: String = r.get(9)?;
    let conflict_fingerprint: Option<String> = r.get(11)?;
    let conflict_sha256: Option<String> = r.get(12)?;
    let conflict_reason: Option<String> = r.get(13)?;
    let conflict_at: Option<String> = r.get(14)?;
    let first_seen: String = r.get(15)?;
    let updated_at: String = r.get(16)?;
    let (key, size, fingerprint, sha256, reason): (String, u64, String, Option<String>, Option<String>) =
        (r.get(1)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(10)?);
    let tally = Tally {
        applied: r.get(18)?,
        stale: r.get(19)?,
        unchanged: r.get(20)?,
        rejected: r.get(21)?,
        dead_lettered: r.get(23)?,
        removed: r.get(25)?,
        ignored: r.get(26)?,
    };
    let generation: u32 = r.get(22)?;
    let counted: bool = r.get(24)?;
    let record_lines: u64 = r.get(17)?;
    Ok((|| {
        let corrupt = |what: &str| StoreError::Corrupt(format!("objects row {name}: {what}"));
        let batch = match (region, kind, file_date, seq) {
            (Some(region), Some(kind), Some(d), Some(seq)) => Some(FileName {
                name: name.clone(),
                region,
                kind,
                date: Version::date_from_number(d).ok_or_else(|| corrupt("bad file_date"))?,
                seq,
            }),
            _ => None,
        };
        let conflict = match (conflict_fingerprint, conflict_sha256, conflict_reason) {
            (Some(fingerprint), Some(sha256), Some(reason)) => {
                Some(Conflict { fingerprint, sha256, reason, at: time(conflict_at)?.unwrap_or(DateTime::UNIX_EPOCH) })
            }
            _ => None,
        };
        Ok(LedgerEntry {
            state: FileState::parse(&state).ok_or_else(|| corrupt("unknown state"))?,
            first_seen: time(Some(first_seen))?.unwrap_or(DateTime::UNIX_EPOCH),
            updated_at: time(Some(updated_at))?.unwrap_or(DateTime::UNIX_EPOCH),
            name,
            key,
            batch,
            size,
            fingerprint,
            sha256,
            reason,
            conflict,
            record_lines,
            tally,
            generation,
            counted,
        })
    })())
}

pub(super) fn load_streams(conn: &Connection) -> Result<Vec<StreamRecord>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT region, next_seq, waiting_since FROM streams ORDER BY region").map_err(map_err)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<u64>>(1)?, r.get::<_, Option<String>>(2)?)))
        .map_err(map_err)?;
    let mut out = Vec::new();
    for row in rows {
        let (region, next_seq, waiting) = row.map_err(map_err)?;
        out.push(StreamRecord { region, next_seq, waiting_since: time(waiting)?, skipped: Default::default() });
    }
    let mut stmt = conn.prepare_cached("SELECT region, seq FROM skips").map_err(map_err)?;
    let skips = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?))).map_err(map_err)?;
    for skip in skips {
        let (region, seq) = skip.map_err(map_err)?;
        match out.iter_mut().find(|s| s.region == region) {
            Some(s) => {
                s.skipped.insert(seq);
            }
            None => out.push(StreamRecord { region, skipped: [seq].into(), ..Default::default() }),
        }
    }
    Ok(out)
}

/// Writes a commit's rows; the caller owns the transaction.
/// How long commit ids are remembered: far longer than any retry of one write.
const COMMIT_IDS_KEPT_SECS: i64 = 7 * 24 * 3600;

pub(super) fn write_commit(conn: &Connection, c: &Commit) -> Result<(), StoreError> {
    if let Some(fence) = &c.fence {
        check_fence(conn, fence)?;
    }
    if let Some(id) = &c.id {
        let now = chrono::Utc::now().timestamp();
        let fresh = conn
            .prepare_cached("INSERT INTO commits (id, at) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING")
            .map_err(map_err)?
            .execute(params![id, now])
            .map_err(map_err)?;
        if fresh == 0 {
            return Ok(()); // written by an earlier attempt whose reply was lost
        }
        conn.prepare_cached("DELETE FROM commits WHERE at < ?1")
            .map_err(map_err)?
            .execute(params![now - COMMIT_IDS_KEPT_SECS])
            .map_err(map_err)?;
    }
    for name in &c.expect_uncounted {
        let counted: Option<bool> = conn
            .prepare_cached("SELECT counted FROM objects WHERE name = ?1")
            .map_err(map_err)?
            .query_row(params![name], |r| r.get(0))
            .optional()
            .map_err(map_err)?;
        if counted == Some(true) {
            return Err(StoreError::Superseded(format!("{name} was applied by another writer")));
        }
    }
    for e in &c.ledger {
        write_object(conn, e)?;
    }
    for s in &c.streams {
        conn.prepare_cached(
            "INSERT INTO streams (region, next_seq, waiting_since) VALUES (?1, ?2, ?3)
             ON CONFLICT (region) DO UPDATE SET
               next_seq = MAX(COALESCE(streams.next_seq, excluded.next_seq), COALESCE(excluded.next_seq, streams.next_seq)),
               waiting_since = excluded.waiting_since",
        )
        .map_err(map_err)?
        .execute(params![s.region, s.next_seq, s.waiting_since.map(text_time)])
        .map_err(map_err)?;
        let mut skip =
            conn.prepare_cached("INSERT OR IGNORE INTO skips (region, seq) VALUES (?1, ?2)").map_err(map_err)?;
        for seq in &s.skipped {
            skip.execute(params![s.region, seq]).map_err(map_err)?;
        }
    }
    for a in &c.audit {
        conn.prepare_cached(
            "INSERT INTO audit (at, actor, action, region, seq, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(map_err)?
        .execute(params![text_time(a.at), a.actor, a.action, a.region, a.seq, a.detail])
        .map_err(map_err)?;
    }
    let d = &c.counters;
    let increments = [
        ("applied_files", d.applied_files),
        ("duplicate_files", d.duplicate_files),
        ("records_applied", d.records.applied),
        ("records_stale", d.records.stale),
        ("records_unchanged", d.records.unchanged),
        ("records_dead_lettered", d.records.dead_lettered),
        ("records_removed", d.records.removed),
        ("records_ignored", d.records.ignored),
    ];
    for (name, by) in increments.into_iter().filter(|(_, by)| *by > 0) {
        conn.prepare_cached(
            "INSERT INTO counters (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
        )
        .map_err(map_err)?
        .execute(params![name, by])
        .map_err(map_err)?;
    }
    Ok(())
}

fn write_object(conn: &Connection, e: &LedgerEntry) -> Result<(), StoreError> {
    let b = e.batch.as_ref();
    let c = e.conflict.as_ref();
    let date = b.map(|b| Version { date: b.date, seq: 0, line: 0 }.date_number());
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO objects ({OBJECT_COLUMNS}) VALUES
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27)"
    ))
    .map_err(map_err)?
    .execute(params![
        e.name,
        e.key,
        b.map(|b| &b.region),
        b.map(|b| &b.kind),
        date,
        b.map(|b| b.seq),
        e.size,
        e.fingerprint,
        e.sha256,
        e.state.as_str(),
        e.reason,
        c.map(|c| &c.fingerprint),
        c.map(|c| &c.sha256),
        c.map(|c| &c.reason),
        c.map(|c| text_time(c.at)),
        text_time(e.first_seen),
        text_time(e.updated_at),
        e.record_lines,
        e.tally.applied,
        e.tally.stale,
        e.tally.unchanged,
        e.tally.rejected,
        e.generation,
        e.tally.dead_lettered,
        e.counted,
        e.tally.removed,
        e.tally.ignored,
    ])
    .map_err(map_err)?;
    Ok(())
}

/// The version rule as SQL: write only when the incoming version is greater than the
/// stored one — the comparison of `core::version::decide` on `(v_date, v_seq, v_line)`.
macro_rules! upsert_when_newer {
    () => {
        " ON CONFLICT (rtype, key) DO UPDATE SET deleted = excluded.deleted, region = excluded.region,
           file = excluded.file, v_date = excluded.v_date, v_seq = excluded.v_seq,
           v_line = excluded.v_line, shape = excluded.shape, field_values = excluded.field_values,
           s_date = NULL, s_seq = NULL, s_file = NULL
         WHERE (excluded.v_date, excluded.v_seq, excluded.v_line) > (records.v_date, records.v_seq, records.v_line)"
    };
}

pub(super) const APPLY_ONE: &str = concat!(
    "INSERT INTO records (rtype, key, deleted, region, file, v_date, v_seq, v_line, shape, field_values)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    upsert_when_newer!()
);

const MERGE_STAGED: &str = concat!(
    "INSERT INTO records (rtype, key, deleted, region, file, v_date, v_seq, v_line, shape, field_values)
     SELECT rtype, key, deleted, region, file, v_date, v_seq, v_line, shape, field_values FROM temp.staging
     WHERE true ORDER BY rtype, key, v_line",
    upsert_when_newer!()
);

/// Runs an INSERT whose ten parameters are a record's columns, in table order, and notes
/// the record's low (see [`Writes`]).
pub(super) fn execute_record(
    stmt: &mut rusqlite::CachedStatement<'_>,
    writes: &mut Writes,
    conn: &Connection,
    r: &Record,
) -> Result<usize, StoreError> {
    let shape = r.fields.as_ref().map(|f| writes.id(conn, &r.record_type, &f.names)).transpose()?;
    let date = r.version.date_number();
    writes.lows.note(r, (date, r.version.seq));
    stmt.execute(params![
        &*r.record_type,
        r.key,
        r.deleted,
        &*r.region,
        &*r.file,
        date,
        r.version.seq,
        r.version.line,
        shape,
        r.fields.as_ref().map(|f| f.values_json.as_str())
    ])
    .map_err(map_err)
}

/// What the writer carries from one statement to the next.
///
/// - Shape ids of field-name lists, cached by the identity of the shared names (a layout
///   lives as long as the process, and the cache keeps each list alive, so an address is
///   never reused for another list).
/// - The lows of the records written and not yet recorded (`lows`): every record bound
///   for writing by [`execute_record`] is noted here.
///
/// Cleared on every rollback: a shape row written inside a rolled-back transaction is
/// gone, and so are its records. (Where a rollback does not clear it, notes left over
/// only lower a low, which keeps it true.)
#[derive(Default)]
pub(super) struct Writes {
    by_names: HashMap<usize, (FieldNames, i64)>,
    pub(super) lows: Lows,
}

impl Writes {
    pub(super) fn clear(&mut self) {
        self.by_names.clear();
        self.lows.clear();
    }

    fn id(&mut self, conn: &Connection, rtype: &str, names: &FieldNames) -> Result<i64, StoreError> {
        let address = names.as_ptr() as usize;
        if let Some((known, id)) = self.by_names.get(&address)
            && known == names
        {
            return Ok(*id);
        }
        let list: Vec<&str> = names.iter().map(|n| &**n).collect();
        let text = serde_json::to_string(&list).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        conn.prepare_cached("INSERT OR IGNORE INTO shapes (rtype, names) VALUES (?1, ?2)")
            .map_err(map_err)?
            .execute(params![rtype, text])
            .map_err(map_err)?;
        let id = conn
            .prepare_cached("SELECT id FROM shapes WHERE rtype = ?1 AND names = ?2")
            .map_err(map_err)?
            .query_row(params![rtype, text], |r| r.get(0))
            .map_err(map_err)?;
        self.by_names.insert(address, (names.clone(), id));
        Ok(id)
    }
}

/// Every shape's field names, for reading records back.
pub(super) fn load_shapes(conn: &Connection) -> Result<HashMap<i64, Vec<String>>, StoreError> {
    let mut stmt = conn.prepare("SELECT id, names FROM shapes").map_err(map_err)?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))).map_err(map_err)?;
    let mut out = HashMap::new();
    for row in rows {
        let (id, names) = row.map_err(map_err)?;
        let names: Vec<String> =
            serde_json::from_str(&names).map_err(|e| StoreError::Corrupt(format!("shape {id}: {e}")))?;
        out.insert(id, names);
    }
    Ok(out)
}

/// Applies records under the version rule, as they stream in.
///
/// A line alone for its identity in `batch` is one conditional upsert: it writes only
/// when the incoming version is greater than the stored one — the same comparison as
/// `core::version::decide`, on `(v_date, v_seq, v_line)` — and only when nothing was
/// written is the stored version read, to tell a stale line from the same line seen again.
/// Several lines of one identity are decided in memory against the stored version, read
/// once, and only the newest applied one is written (see [`apply_each`]). The single
/// writer connection makes each step atomic with respect to every other write.
pub(super) fn apply_records(conn: &Connection, writes: &mut Writes, batch: &[Record]) -> Result<Tally, StoreError> {
    let mut tally = [Tally::default()];
    let order: Vec<(usize, &Record)> = batch.iter().map(|r| (0, r)).collect();
    apply_each(conn, writes, &order, &mut tally)?;
    Ok(tally[0])
}

/// Applies `(slot, record)` pairs, adding each line's outcome to `tallies[slot]`.
/// `records` holds the lines of one identity next to each other, in version order.
///
/// Each line gets the outcome a conditional upsert of it, run in that order, would give:
/// with `S` the stored version, the lines of an identity newer than `S` are applied (each
/// is newer than the one before it), a line equal to the newest so far is unchanged, an
/// older one stale. The row left is the newest applied line's, which is what the last of
/// those upserts would have written (an upsert overwrites every column but the identity).
fn apply_each(
    conn: &Connection,
    writes: &mut Writes,
    records: &[(usize, &Record)],
    tallies: &mut [Tally],
) -> Result<(), StoreError> {
    let mut write = conn.prepare_cached(APPLY_ONE).map_err(map_err)?;
    let mut read = conn
        .prepare_cached("SELECT v_date, v_seq, v_line FROM records WHERE rtype = ?1 AND key = ?2")
        .map_err(map_err)?;
    let same_identity =
        |(_, a): &(usize, &Record), (_, b): &(usize, &Record)| a.key == b.key && a.record_type == b.record_type;
    for lines in records.chunk_by(same_identity) {
        let [(slot, r)] = lines else {
            apply_together(conn, writes, (&mut write, &mut read), lines, tallies)?;
            continue;
        };
        let tally = &mut tallies[*slot];
        let written = execute_record(&mut write, writes, conn, r)?;
        if written == 1 {
            tally.applied += 1;
            continue;
        }
        let stored = stored_version(&mut read, r)?;
        match decide(stored, r.version) {
            Decision::Stale => tally.stale += 1,
            Decision::Same => tally.unchanged += 1,
            Decision::Apply => {
                return Err(StoreError::Corrupt(format!(
                    "record {} {}: newer version {:?} was not written over {:?}",
                    r.record_type, r.key, r.version, stored
                )));
            }
        }
    }
    Ok(())
}

/// Several lines of one identity, in version order: decided against the stored version,
/// read once; the newest applied line is written once.
fn apply_together(
    conn: &Connection,
    writes: &mut Writes,
    (write, read): (&mut rusqlite::CachedStatement<'_>, &mut rusqlite::CachedStatement<'_>),
    lines: &[(usize, &Record)],
    tallies: &mut [Tally],
) -> Result<(), StoreError> {
    let Some((_, first)) = lines.first() else { return Ok(()) };
    let stored = stored_version(read, first)?;
    let (decisions, newest) = decide_in_order(stored, lines.iter().map(|(_, r)| r.version));
    for ((slot, _), d) in lines.iter().zip(decisions) {
        tallies[*slot].count(d);
    }
    let to_write = newest.and_then(|i| lines.get(i)).map(|(_, r)| *r);
    match to_write {
        Some(r) if execute_record(write, writes, conn, r)? != 1 => Err(StoreError::Corrupt(format!(
            "record {} {}: version {:?} was decided newer but not written",
            r.record_type, r.key, r.version
        ))),
        _ => Ok(()),
    }
}

/// The stored version of `r`'s identity, with `read` the statement
/// `SELECT v_date, v_seq, v_line FROM records WHERE rtype = ?1 AND key = ?2`.
pub(super) fn stored_version(
    read: &mut rusqlite::CachedStatement<'_>,
    r: &Record,
) -> Result<Option<Version>, StoreError> {
    let stored = read
        .query_row(params![&*r.record_type, r.key], |row| {
            Ok((row.get::<_, u32>(0)?, row.get::<_, u64>(1)?, row.get::<_, u64>(2)?))
        })
        .optional()
        .map_err(map_err)?;
    stored
        .map(|(d, seq, line)| {
            Version::date_from_number(d)
                .map(|date| Version { date, seq, line })
                .ok_or_else(|| StoreError::Corrupt(format!("record {} {}: bad v_date {d}", r.record_type, r.key)))
        })
        .transpose()
}

/// The per-connection staging table for one file's records (a TEMP table: it lives in
/// the connection's temporary database, outside the WAL, and vanishes with a crash).
pub(super) const STAGING: &str = "CREATE TEMP TABLE IF NOT EXISTS staging (
    rtype TEXT NOT NULL, key TEXT NOT NULL, deleted INTEGER NOT NULL, region TEXT NOT NULL,
    file TEXT NOT NULL, v_date INTEGER NOT NULL, v_seq INTEGER NOT NULL, v_line INTEGER NOT NULL,
    shape INTEGER, field_values TEXT);
  DELETE FROM temp.staging;";

/// Appends records to the staging table (cheap: append order, no lookups).
pub(super) fn stage_records(conn: &Connection, writes: &mut Writes, batch: &[Record]) -> Result<(), StoreError> {
    let mut stage = conn
        .prepare_cached(
            "INSERT INTO temp.staging (rtype, key, deleted, region, file, v_date, v_seq, v_line, shape, field_values)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .map_err(map_err)?;
    for r in batch {
        execute_record(&mut stage, writes, conn, r)?;
    }
    Ok(())
}

/// Applies the staged records under the version rule, inside the caller's transaction.
///
/// One conditional upsert over the staged rows sorted by identity (then line): a row is
/// written only when its version is greater than the stored one — the comparison of
/// `core::version::decide` on `(v_date, v_seq, v_line)`. Sorting makes the walk through
/// the records B-tree sequential, so a file touches each page once however large it is;
/// SQLite sorts with bounded memory, spilling to temporary files. Rows of one file can be
/// applied in any order because their versions differ (by line); within an identity the
/// line order is kept, so the tally is the one a line-by-line pass would give.
///
/// Lines not written are stale or the same line seen again. A line can only be the same
/// if the stored version is this very file's (same name, date and SEQ), which is
/// possible only when the file was applied before (`reapply`).
pub(super) fn merge_staged(
    conn: &Connection,
    file: &FileTicket,
    staged: u64,
    rejected: u64,
) -> Result<Tally, StoreError> {
    let date = Version { date: file.file.date, seq: 0, line: 0 }.date_number();
    let unchanged: u64 = if file.reapply {
        conn.query_row(
            "SELECT count(*) FROM records WHERE file = ?1 AND v_date = ?2 AND v_seq = ?3",
            params![file.file.name, date, file.file.seq],
            |r| r.get(0),
        )
        .map_err(map_err)?
    } else {
        0
    };
    let applied = conn.prepare_cached(MERGE_STAGED).map_err(map_err)?.execute([]).map_err(map_err)? as u64;
    conn.execute_batch("DELETE FROM temp.staging").map_err(map_err)?;
    let stale = staged.checked_sub(applied + unchanged).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "{}: {applied} applied and {unchanged} unchanged out of {staged} lines",
            file.file.name
        ))
    })?;
    Ok(Tally { applied, stale, unchanged, rejected, ..Tally::default() })
}

/// Whether the ledger says the file was applied already.
pub(super) fn applied_before(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    let state: Option<String> = conn
        .query_row("SELECT state FROM objects WHERE name = ?1", params![name], |r| r.get(0))
        .optional()
        .map_err(map_err)?;
    Ok(state.as_deref().and_then(FileState::parse).is_some_and(FileState::is_processed))
}

/// Applies broker messages whose receipts do not exist yet, in one pass over their
/// records sorted by identity and version (a forward walk through the records B-tree, as
/// for a file); writes their receipts and clears dead-letter marks of their lines. The
/// caller owns the transaction.
pub(super) fn apply_delivered(
    conn: &Connection,
    writes: &mut Writes,
    batches: &[DeliveredBatch],
) -> Result<Vec<Option<Tally>>, StoreError> {
    let mut seen_stmt = conn.prepare_cached("SELECT 1 FROM receipts WHERE id = ?1").map_err(map_err)?;
    let mut fresh = vec![false; batches.len()];
    let mut taken = std::collections::HashSet::with_capacity(batches.len());
    for (i, b) in batches.iter().enumerate() {
        let seen: Option<i64> = seen_stmt.query_row(params![b.receipt], |r| r.get(0)).optional().map_err(map_err)?;
        // the same id twice in one call counts once
        fresh[i] = seen.is_none() && taken.insert(b.receipt.as_str());
    }
    let order = crate::ports::store::in_identity_order(batches, &fresh);
    let mut tallies = vec![Tally::default(); batches.len()];
    apply_each(conn, writes, &order, &mut tallies)?;
    let mut receipt = conn
        .prepare_cached(
            "INSERT INTO receipts (id, file, generation, applied, stale, unchanged) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(map_err)?;
    let mut clear = conn
        .prepare_cached("DELETE FROM dead_letters WHERE file = ?1 AND generation = ?2 AND line = ?3")
        .map_err(map_err)?;
    // One probe per message: a delivery rarely has dead letters (a replay's does).
    let mut any_dead = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM dead_letters WHERE file = ?1 AND generation = ?2)")
        .map_err(map_err)?;
    let mut out = Vec::with_capacity(batches.len());
    for ((b, tally), fresh) in batches.iter().zip(tallies).zip(fresh) {
        if !fresh {
            out.push(None);
            continue;
        }
        receipt
            .execute(params![b.receipt, b.file, b.generation, tally.applied, tally.stale, tally.unchanged])
            .map_err(map_err)?;
        if any_dead.query_row(params![b.file, b.generation], |r| r.get::<_, bool>(0)).map_err(map_err)? {
            for r in &b.records {
                clear.execute(params![b.file, b.generation, r.version.line]).map_err(map_err)?;
            }
        }
        out.push(Some(tally));
    }
    Ok(out)
}

pub(super) fn mark_dead_lettered(conn: &Connection, marks: &[DeadLetter]) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached("INSERT OR IGNORE INTO dead_letters (file, generation, line, reason) VALUES (?1, ?2, ?3, ?4)")
        .map_err(map_err)?;
    for m in marks {
        stmt.execute(params![m.file, m.generation, m.line, m.reason]).map_err(map_err)?;
    }
    Ok(())
}

pub(super) fn delivery_progress(conn: &Connection, file: &str, generation: u32) -> Result<Tally, StoreError> {
    let (applied, stale, unchanged): (u64, u64, u64) = conn
        .query_row(
            "SELECT coalesce(sum(applied), 0), coalesce(sum(stale), 0), coalesce(sum(unchanged), 0)
             FROM receipts WHERE file = ?1 AND generation = ?2",
            params![file, generation],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(map_err)?;
    let dead_lettered: u64 = conn
        .query_row(
            "SELECT count(*) FROM dead_letters WHERE file = ?1 AND generation = ?2",
            params![file, generation],
            |r| r.get(0),
        )
        .map_err(map_err)?;
    Ok(Tally { applied, stale, unchanged, dead_lettered, ..Tally::default() })
}

pub(super) fn insert_rejects(conn: &Connection, batch: &[Reject]) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached("INSERT OR REPLACE INTO rejects (file, line, reason, raw) VALUES (?1, ?2, ?3, ?4)")
        .map_err(map_err)?;
    for r in batch {
        stmt.execute(params![&*r.file, r.line, r.reason, r.raw]).map_err(map_err)?;
    }
    Ok(())
}

/// Reads one records row (columns: rtype, key, deleted, region, file, v_date, v_seq,
/// v_line, shape, field_values) into the exported form.
pub(super) fn read_record(
    r: &Row<'_>,
    shapes: &HashMap<i64, Vec<String>>,
) -> rusqlite::Result<Result<StoredRecord, StoreError>> {
    let (record_type, key, d): (String, String, u32) = (r.get(0)?, r.get(1)?, r.get(5)?);
    let (shape, values): (Option<i64>, Option<String>) = (r.get(8)?, r.get(9)?);
    let corrupt = |what: String| StoreError::Corrupt(format!("record {record_type} {key}: {what}"));
    let Some(date) = Version::date_from_number(d) else {
        return Ok(Err(corrupt(format!("bad v_date {d}"))));
    };
    let fields_json = match (shape, values) {
        (Some(shape), Some(values)) => match shapes.get(&shape).map(|names| object_json(names, &values)) {
            Some(Ok(json)) => Some(json),
            Some(Err(e)) => return Ok(Err(corrupt(e))),
            None => return Ok(Err(corrupt(format!("unknown shape {shape}")))),
        },
        _ => None,
    };
    Ok(Ok(StoredRecord {
        version: Version { date, seq: r.get(6)?, line: r.get(7)? },
        deleted: r.get(2)?,
        region: r.get(3)?,
        file: r.get(4)?,
        fields_json,
        record_type,
        key,
    }))
}

pub(super) fn read_audit(r: &Row<'_>) -> rusqlite::Result<Result<AuditEntry, StoreError>> {
    let at: String = r.get(0)?;
    let entry = (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?);
    Ok(time(Some(at)).map(|at| AuditEntry {
        at: at.unwrap_or(DateTime::UNIX_EPOCH),
        actor: entry.0,
        action: entry.1,
        region: entry.2,
        seq: entry.3,
        detail: entry.4,
    }))
}

/// The stored lease `name`, if any.
pub(super) fn load_lease(conn: &Connection, name: &str) -> Result<Option<Lease>, StoreError> {
    conn.prepare_cached("SELECT owner, token, expires_at FROM leases WHERE name = ?1")
        .map_err(map_err)?
        .query_row(params![name], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)))
        .optional()
        .map_err(map_err)?
        .map(|(owner, token, expires)| {
            Ok(Lease {
                name: name.to_string(),
                owner,
                token: u64::try_from(token).map_err(|_| StoreError::Corrupt(format!("lease {name}: token {token}")))?,
                expires_at: time(Some(expires))?
                    .ok_or_else(|| StoreError::Corrupt(format!("lease {name}: no expiry")))?,
            })
        })
        .transpose()
}

pub(super) fn load_leases(conn: &Connection) -> Result<Vec<Lease>, StoreError> {
    let names: Vec<String> = conn
        .prepare_cached("SELECT name FROM leases ORDER BY name")
        .map_err(map_err)?
        .query_map([], |r| r.get(0))
        .map_err(map_err)?
        .collect::<Result<_, _>>()
        .map_err(map_err)?;
    names.iter().filter_map(|n| load_lease(conn, n).transpose()).collect()
}

pub(super) fn store_lease(conn: &Connection, l: &Lease) -> Result<(), StoreError> {
    let token = i64::try_from(l.token).map_err(|_| StoreError::Corrupt(format!("lease {}: token overflow", l.name)))?;
    conn.prepare_cached(
        "INSERT INTO leases (name, owner, token, expires_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, token = excluded.token,
         expires_at = excluded.expires_at",
    )
    .map_err(map_err)?
    .execute(params![l.name, l.owner, token, text_time(l.expires_at)])
    .map_err(map_err)?;
    Ok(())
}

/// Refuses the commit unless `fence` still holds the lease's token.
fn check_fence(conn: &Connection, fence: &Fence) -> Result<(), StoreError> {
    match load_lease(conn, &fence.lease)? {
        Some(l) if l.token == fence.token => Ok(()),
        Some(l) => Err(StoreError::Fenced(format!(
            "{} is held with token {} by {}; this write carries token {}",
            fence.lease, l.token, l.owner, fence.token
        ))),
        None => Err(StoreError::Fenced(format!("{} is not held by anyone", fence.lease))),
    }
}
