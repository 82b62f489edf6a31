//! Full files in MongoDB (`core::full`): the sweep after a file.

use super::errors::map_err;
use super::numbers::int;
use super::records::{RECORDS, as_i64, version_key};
use crate::core::full::{Sweep, Swept};
use crate::core::version::Version;
use crate::ports::store::StoreError;
use mongodb::Database;
use mongodb::bson::{Bson, Document, doc};

/// Full files applied in `tombstone` mode, per region and record type they cover. (Not a
/// name ending in `_files`: the MongoDB-wire server in CI does not upsert into those.)
pub(super) const FULL_FILES: &str = "full_file_floors";
/// Records a sweep removed, per file and delivery.
pub(super) const SWEEPS: &str = "sweeps";

/// Sweeps a region after a file (`core::full`). A record a full file removed keeps its
/// last write's version in `v` (the version rule compares with it) and shows as a
/// tombstone of the earliest full file of its region after that write (`deleted`,
/// `file`, `vd`/`vs`/`vl`; `swept` and `sv`, that file's version). Each step is
/// idempotent. The count of removals is added after the records are swept; a crash
/// between the two loses that count (never a removal). Writes use the client's write
/// concern (the store's).
pub(super) async fn sweep(db: &Database, s: &Sweep) -> Result<Swept, StoreError> {
    let full_files = db.collection::<Document>(FULL_FILES);
    let records = db.collection::<Document>(RECORDS);
    let at = version_key(&s.version);
    let shown = |v: &str, version: &Version, file: &str| -> Result<Document, StoreError> {
        Ok(doc! {
            "deleted": true, "fields": Bson::Null, "swept": true, "sv": v, "file": file,
            "vd": version.date.format("%Y-%m-%d").to_string(), "vs": as_i64(version.seq, "SEQ")?, "vl": 0_i64,
        })
    };
    if let Some(full) = s.raises_floor() {
        for t in &full.record_types {
            let id = format!("{}/{t}/{at}", s.region);
            let d = doc! { "region": &s.region, "t": t, "v": &at, "file": &s.file };
            full_files.update_one(doc! { "_id": &id }, doc! { "$set": d }).upsert(true).await.map_err(map_err)?;
            // Records an even later full file removed, written before this one: in
            // version order this one removed them.
            let filter = doc! { "t": t, "region": &s.region, "swept": true, "sv": { "$gt": &at }, "v": { "$lt": &at } };
            records.update_many(filter, doc! { "$set": shown(&at, &s.version, &s.file)? }).await.map_err(map_err)?;
        }
    }
    let mut swept = Swept::default();
    if let Some(full) = s.reports() {
        for t in &full.record_types {
            let live_below = doc! { "t": t, "region": &s.region, "deleted": false, "v": { "$lt": &at } };
            swept.reported += records.count_documents(live_below).await.map_err(map_err)?;
        }
    }
    // Types with a full file at or above this file: its lines, or what it did not
    // contain, may now be live below one.
    let mut types = Vec::new();
    let mut cursor = full_files.find(doc! { "region": &s.region, "v": { "$gte": &at } }).await.map_err(map_err)?;
    while cursor.advance().await.map_err(map_err)? {
        let d = cursor.deserialize_current().map_err(map_err)?;
        let t = d.get_str("t").map_err(|_| StoreError::Corrupt(format!("full file document {d}")))?.to_string();
        if !types.contains(&t) {
            types.push(t);
        }
    }
    let mut removed = 0u64;
    for t in types {
        let mut floors = Vec::new();
        let mut cursor =
            full_files.find(doc! { "region": &s.region, "t": &t }).sort(doc! { "v": 1 }).await.map_err(map_err)?;
        while cursor.advance().await.map_err(map_err)? {
            let d = cursor.deserialize_current().map_err(map_err)?;
            let (Ok(v), Ok(file)) = (d.get_str("v"), d.get_str("file")) else {
                return Err(StoreError::Corrupt(format!("full file document {d}")));
            };
            let version =
                parse_version_key(v).ok_or_else(|| StoreError::Corrupt(format!("full file version {v:?}")))?;
            floors.push((v.to_string(), version, file.to_string()));
        }
        // Each live record goes to the earliest full file after its last write. Before
        // this file, no live record lay below a full file; so only two ranges can hold
        // one now: this file's lines (up to the first full file above it), and for a
        // full file, what lies below it (down to the full file before it).
        let mut above: Option<String> = None;
        for (v, version, file) in floors {
            let lower = above.replace(v.clone());
            let holds_this_file = lower.as_deref().is_none_or(|l| l <= at.as_str()) && at.as_str() < v.as_str();
            if !holds_this_file && v != at {
                continue;
            }
            let mut range = doc! { "$lt": &v };
            if let Some(lower) = lower {
                range.insert("$gte", lower);
            }
            let filter = doc! { "t": &t, "region": &s.region, "deleted": false, "v": range };
            let done =
                records.update_many(filter, doc! { "$set": shown(&v, &version, &file)? }).await.map_err(map_err)?;
            removed += done.modified_count;
        }
    }
    let sweeps = db.collection::<Document>(SWEEPS);
    let id = format!("{}/{}", s.file, s.generation);
    if removed > 0 {
        sweeps
            .update_one(doc! { "_id": &id }, doc! { "$inc": { "removed": as_i64(removed, "removed")? } })
            .upsert(true)
            .await
            .map_err(map_err)?;
    }
    let counted = sweeps.find_one(doc! { "_id": &id }).await.map_err(map_err)?;
    swept.removed = counted.and_then(|d| int(d.get("removed"))).map_or(0, |n| u64::try_from(n).unwrap_or(0));
    Ok(swept)
}

/// Reads a [`version_key`] back.
fn parse_version_key(v: &str) -> Option<Version> {
    let mut parts = v.split('.');
    let (d, seq, line) = (parts.next()?, parts.next()?, parts.next()?);
    Some(Version {
        date: Version::date_from_number(d.parse().ok()?)?,
        seq: seq.parse().ok()?,
        line: line.parse().ok()?,
    })
}
