//! The reads that follow the active state, not the history (see
//! [`LedgerEntry::is_settled`]): a pass, `status`, `/metrics`, the page and the alert
//! check use these, so their cost stays flat as the ledger grows.
//!
//! Each read asks an index for a superset of what it returns and keeps exactly the
//! entries the core's predicate calls active, so the store and the core cannot disagree.

use super::rows::{self, OBJECT_COLUMNS, collect_objects, map_err, read_object};
use crate::core::ledger::LedgerEntry;
use crate::ports::store::{AuditEntry, KnownName, RegionHistory, Snapshot, StoreError};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::{BTreeMap, HashMap};

/// Every region with a validly named file, found by skipping through the
/// `(region, seq)` index: one seek per region, not one step per file.
fn regions(c: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = c
        .prepare_cached(
            "WITH RECURSIVE r(region) AS ( \
               SELECT min(region) FROM objects \
               UNION ALL \
               SELECT (SELECT min(region) FROM objects WHERE region > r.region) FROM r WHERE r.region IS NOT NULL) \
             SELECT region FROM r WHERE region IS NOT NULL",
        )
        .map_err(map_err)?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(map_err)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
}

/// The active ledger entries and every stream, in one read transaction.
pub(super) fn active(c: &Connection) -> Result<Snapshot, StoreError> {
    let streams = rows::load_streams(c)?;
    let next: HashMap<&str, Option<u64>> = streams.iter().map(|s| (s.region.as_str(), s.next_seq)).collect();
    let mut found: BTreeMap<String, LedgerEntry> = BTreeMap::new();
    let mut keep = |rows: Vec<LedgerEntry>| {
        for e in rows {
            found.insert(e.name.clone(), e);
        }
    };
    // Not applied, in conflict, or badly named (the partial index `objects_open`).
    let sql = format!(
        "SELECT {OBJECT_COLUMNS} FROM objects \
         WHERE state <> 'applied' OR conflict_reason IS NOT NULL OR region IS NULL"
    );
    let mut stmt = c.prepare_cached(&sql).map_err(map_err)?;
    keep(collect_objects(stmt.query_map([], read_object).map_err(map_err)?)?);
    // From each region's expected SEQ on (every file when it has none yet).
    let sql = format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE region = ?1 AND seq >= ?2");
    let mut stmt = c.prepare_cached(&sql).map_err(map_err)?;
    for region in regions(c)? {
        let from = next.get(region.as_str()).copied().flatten().unwrap_or(0);
        keep(collect_objects(stmt.query_map(params![region, from], read_object).map_err(map_err)?)?);
    }
    let ledger = found
        .into_values()
        .filter(|e| !e.is_settled(e.region().and_then(|r| next.get(r).copied().flatten())))
        .collect();
    Ok(Snapshot { ledger, streams })
}

pub(super) fn known_names(c: &Connection) -> Result<Vec<KnownName>, StoreError> {
    let mut stmt = c.prepare_cached("SELECT name, fingerprint, conflict_fingerprint FROM objects").map_err(map_err)?;
    let rows = stmt
        .query_map([], |r| Ok(KnownName { name: r.get(0)?, fingerprint: r.get(1)?, conflict_fingerprint: r.get(2)? }))
        .map_err(map_err)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
}

pub(super) fn lookup(
    c: &Connection,
    names: &[String],
    positions: &[(String, u64)],
) -> Result<Vec<LedgerEntry>, StoreError> {
    let mut found: BTreeMap<String, LedgerEntry> = BTreeMap::new();
    let mut by_name =
        c.prepare_cached(&format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE name = ?1")).map_err(map_err)?;
    for name in names {
        for e in collect_objects(by_name.query_map(params![name], read_object).map_err(map_err)?)? {
            found.insert(e.name.clone(), e);
        }
    }
    let mut at = c
        .prepare_cached(&format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE region = ?1 AND seq = ?2"))
        .map_err(map_err)?;
    for (region, seq) in positions {
        for e in collect_objects(at.query_map(params![region, seq], read_object).map_err(map_err)?)? {
            found.insert(e.name.clone(), e);
        }
    }
    Ok(found.into_values().collect())
}

pub(super) fn region_history(c: &Connection, since: DateTime<Utc>) -> Result<Vec<RegionHistory>, StoreError> {
    let since = rows::text_time(since);
    let mut bounds =
        c.prepare_cached("SELECT min(first_seen), max(first_seen) FROM objects WHERE region = ?1").map_err(map_err)?;
    let mut processed = c
        .prepare_cached(
            "SELECT seq FROM objects WHERE region = ?1 AND state IN ('applied', 'delivered') \
             ORDER BY seq DESC LIMIT 1",
        )
        .map_err(map_err)?;
    let mut recent =
        c.prepare_cached("SELECT first_seen FROM objects WHERE region = ?1 AND first_seen > ?2").map_err(map_err)?;
    let mut out = Vec::new();
    for region in regions(c)? {
        let (first, last): (Option<String>, Option<String>) =
            bounds.query_row(params![region], |r| Ok((r.get(0)?, r.get(1)?))).map_err(map_err)?;
        let last_processed_seq: Option<u64> =
            processed.query_row(params![region], |r| r.get(0)).optional().map_err(map_err)?;
        let texts = recent
            .query_map(params![region, since], |r| r.get::<_, String>(0))
            .map_err(map_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(map_err)?;
        let recent_arrivals = texts
            .into_iter()
            .map(|t| rows::time(Some(t)))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect();
        out.push(RegionHistory {
            first_arrival: rows::time(first)?,
            last_arrival: rows::time(last)?,
            last_processed_seq,
            recent_arrivals,
            region,
        });
    }
    Ok(out)
}

pub(super) fn recent_audit(c: &Connection, n: usize) -> Result<Vec<AuditEntry>, StoreError> {
    let mut stmt = c
        .prepare_cached("SELECT at, actor, action, region, seq, detail FROM audit ORDER BY id DESC LIMIT ?1")
        .map_err(map_err)?;
    let rows = stmt.query_map(params![n as i64], rows::read_audit).map_err(map_err)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.map_err(map_err)??);
    }
    out.reverse();
    Ok(out)
}
