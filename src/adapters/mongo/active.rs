//! The reads that follow the active state, not the history (see
//! [`LedgerEntry::is_settled`]); the MongoDB side of `sqlite/active.rs`.
//!
//! Each read asks indexed queries for a superset of what it returns and keeps exactly
//! the entries the core's predicate calls active, so the store and the core cannot
//! disagree.

use super::errors::map_err;
use super::journal::{self, AUDIT, LEDGER, STREAMS};
use super::numbers::signed;
use crate::core::ledger::{FileState, LedgerEntry};
use crate::ports::store::{AuditEntry, KnownName, RegionHistory, Snapshot, StoreError};
use chrono::{DateTime, Utc};
use mongodb::Database;
use mongodb::bson::{Bson, Document, doc};
use std::collections::{BTreeMap, HashMap};

/// How many names or SEQs one `$in` carries.
const LOOKUP_CHUNK: usize = 500;

/// The indexes these reads rely on: (collection, keys).
pub(super) fn indexes() -> [(&'static str, Document); 2] {
    [(LEDGER, doc! { "batch.region": 1, "batch.seq": 1 }), (LEDGER, doc! { "batch.region": 1, "first_seen": 1 })]
}

/// Every document `filter` matches, in `sort` order, at most `limit`.
pub(super) async fn find(
    db: &Database,
    collection: &str,
    filter: Document,
    sort: Document,
    limit: Option<i64>,
) -> Result<Vec<Document>, StoreError> {
    find_fields(db, collection, filter, sort, limit, None).await
}

/// [`find`] returning only the `fields` named (top-level ones: the MongoDB-wire server in
/// CI ignores a projection of a nested field).
async fn find_fields(
    db: &Database,
    collection: &str,
    filter: Document,
    sort: Document,
    limit: Option<i64>,
    fields: Option<Document>,
) -> Result<Vec<Document>, StoreError> {
    let coll = db.collection::<Document>(collection);
    let mut find = coll.find(filter).sort(sort);
    if let Some(n) = limit {
        find = find.limit(n);
    }
    if let Some(fields) = fields {
        find = find.projection(fields);
    }
    let mut cursor = find.await.map_err(map_err)?;
    let mut out = Vec::new();
    while cursor.advance().await.map_err(map_err)? {
        out.push(cursor.deserialize_current().map_err(map_err)?);
    }
    Ok(out)
}

/// Every region with a validly named file.
async fn regions(db: &Database) -> Result<Vec<String>, StoreError> {
    let values = db.collection::<Document>(LEDGER).distinct("batch.region", doc! {}).await.map_err(map_err)?;
    let mut regions: Vec<String> = values
        .into_iter()
        .filter_map(|v| match v {
            Bson::String(s) => Some(s),
            _ => None,
        })
        .collect();
    regions.sort();
    regions.dedup();
    Ok(regions)
}

fn keep(found: &mut BTreeMap<String, LedgerEntry>, docs: &[Document]) -> Result<(), StoreError> {
    for d in docs {
        let e = journal::ledger_entry(d)?;
        found.insert(e.name.clone(), e);
    }
    Ok(())
}

pub(super) async fn active(db: &Database) -> Result<Snapshot, StoreError> {
    let streams = find(db, STREAMS, doc! {}, doc! { "_id": 1 }, None)
        .await?
        .iter()
        .map(journal::stream_record)
        .collect::<Result<Vec<_>, _>>()?;
    let next: HashMap<&str, Option<u64>> = streams.iter().map(|s| (s.region.as_str(), s.next_seq)).collect();
    let mut found = BTreeMap::new();
    let open = [FileState::Pending, FileState::Delivered, FileState::Quarantined, FileState::Skipped];
    let open: Vec<&str> = open.iter().map(|s| s.as_str()).collect();
    for filter in
        [doc! { "state": { "$in": open } }, doc! { "conflict": { "$type": "object" } }, doc! { "batch": Bson::Null }]
    {
        keep(&mut found, &find(db, LEDGER, filter, doc! { "_id": 1 }, None).await?)?;
    }
    for region in regions(db).await? {
        let from = next.get(region.as_str()).copied().flatten().unwrap_or(0);
        let filter = doc! { "batch.region": &region, "batch.seq": { "$gte": signed(from) } };
        keep(&mut found, &find(db, LEDGER, filter, doc! { "_id": 1 }, None).await?)?;
    }
    let ledger = found
        .into_values()
        .filter(|e| !e.is_settled(e.region().and_then(|r| next.get(r).copied().flatten())))
        .collect();
    Ok(Snapshot { ledger, streams })
}

pub(super) async fn known_names(db: &Database) -> Result<Vec<KnownName>, StoreError> {
    let mut cursor = db
        .collection::<Document>(LEDGER)
        .find(doc! {})
        // The whole `conflict` (a few fields): the MongoDB-wire server in CI ignores a
        // projection of a nested field.
        .projection(doc! { "fingerprint": 1, "conflict": 1 })
        .await
        .map_err(map_err)?;
    let mut out = Vec::new();
    while cursor.advance().await.map_err(map_err)? {
        let d: Document = cursor.deserialize_current().map_err(map_err)?;
        out.push(KnownName {
            name: d.get_str("_id").map_err(|_| StoreError::Corrupt("ledger document without _id".into()))?.into(),
            fingerprint: d.get_str("fingerprint").unwrap_or_default().into(),
            conflict_fingerprint: d
                .get_document("conflict")
                .ok()
                .and_then(|c| c.get_str("fingerprint").ok())
                .map(str::to_string),
        });
    }
    Ok(out)
}

pub(super) async fn lookup(
    db: &Database,
    names: &[String],
    positions: &[(String, u64)],
) -> Result<Vec<LedgerEntry>, StoreError> {
    let mut found = BTreeMap::new();
    for chunk in names.chunks(LOOKUP_CHUNK) {
        keep(&mut found, &find(db, LEDGER, doc! { "_id": { "$in": chunk } }, doc! { "_id": 1 }, None).await?)?;
    }
    let mut by_region: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (region, seq) in positions {
        by_region.entry(region.as_str()).or_default().push(signed(*seq));
    }
    for (region, seqs) in by_region {
        for chunk in seqs.chunks(LOOKUP_CHUNK) {
            let filter = doc! { "batch.region": region, "batch.seq": { "$in": chunk } };
            keep(&mut found, &find(db, LEDGER, filter, doc! { "_id": 1 }, None).await?)?;
        }
    }
    Ok(found.into_values().collect())
}

pub(super) async fn region_history(db: &Database, since: DateTime<Utc>) -> Result<Vec<RegionHistory>, StoreError> {
    let since = journal::text_time(since);
    let processed = [FileState::Applied.as_str(), FileState::Delivered.as_str()];
    let mut out = Vec::new();
    for region in regions(db).await? {
        let arrived = Some(doc! { "first_seen": 1 });
        // The region's first (`1`) or last (`-1`) arrival, from the arrival index.
        let arrival = |order: i32| {
            let filter = doc! { "batch.region": &region };
            find_fields(db, LEDGER, filter, doc! { "first_seen": order }, Some(1), arrived.clone())
        };
        let (first, last) = (arrival(1).await?, arrival(-1).await?);
        let top = find_fields(
            db,
            LEDGER,
            doc! { "batch.region": &region, "state": { "$in": processed.to_vec() } },
            doc! { "batch.seq": -1 },
            Some(1),
            Some(doc! { "batch": 1 }),
        )
        .await?;
        let recent = find_fields(
            db,
            LEDGER,
            doc! { "batch.region": &region, "first_seen": { "$gt": &since } },
            doc! { "_id": 1 },
            None,
            arrived,
        )
        .await?;
        let arrival = |d: Option<&Document>| d.map(|d| journal::time(d, "first_seen")).transpose();
        out.push(RegionHistory {
            first_arrival: arrival(first.first())?,
            last_arrival: arrival(last.first())?,
            last_processed_seq: top
                .first()
                .and_then(|d| d.get_document("batch").ok())
                .and_then(|b| super::numbers::int(b.get("seq")))
                .and_then(|v| u64::try_from(v).ok()),
            recent_arrivals: recent.iter().map(|d| journal::time(d, "first_seen")).collect::<Result<_, _>>()?,
            region,
        });
    }
    Ok(out)
}

pub(super) async fn recent_audit(db: &Database, n: usize) -> Result<Vec<AuditEntry>, StoreError> {
    let limit = i64::try_from(n).unwrap_or(i64::MAX);
    let mut docs = find(db, AUDIT, doc! {}, doc! { "_id": -1 }, Some(limit)).await?;
    docs.reverse();
    docs.iter().map(journal::audit_entry).collect()
}
