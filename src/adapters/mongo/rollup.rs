//! Keeps the journal bounded: counter roll-ups.
//!
//! Counters are the sums of the journal's increments (`journal.rs`). Left alone the
//! journal grows with every commit ever made, and so does what `counts()` reads. Here the
//! oldest journal documents are folded into one roll-up document and deleted.
//!
//! Invariant: the roll-up holds the sums of every journal document whose `key` (its id
//! as text) is up to and including `through`; `counts()` adds the sums of the journal
//! documents *after* `through` (and of any written before keys existed), so a document is counted once whether it was folded or not, and whether
//! it was deleted yet or not. Folding moves `through` by compare-and-set (one writer
//! wins; the others fold nothing), and deletes only what an *earlier* fold covered, so a
//! reader that read the roll-up just before a fold still finds every document after the
//! `through` it read (and `counts()` reads again when `through` moved meanwhile).
//! Documents written before keys existed get theirs in id order, and no fold passes the
//! oldest one still without a key. Only documents older than
//! [`KEEP`] are folded: a commit is retried within seconds, so its id is still in the
//! journal to be recognised (the SQLite store keeps commit ids as long). Nothing at or
//! after the oldest journal document not copied out yet, or still pending under a lease,
//! is folded.

use super::errors::{DUPLICATE_KEY, map_err, server_code};
use super::journal::JOURNAL;
use super::numbers::unsigned;
use crate::ports::store::{Counts, StoreError};
use chrono::{DateTime, Utc};
use mongodb::Database;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, Document, doc};

pub(super) const ROLLUP: &str = "counter_rollup";
const ROLLUP_ID: &str = "counters";
/// How long journal documents are kept before they are folded.
pub(super) const KEEP: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// The counters the journal carries, by name.
pub(super) const COUNTERS: [&str; 8] = [
    "applied_files",
    "duplicate_files",
    "records_applied",
    "records_stale",
    "records_unchanged",
    "records_dead_lettered",
    "records_removed",
    "records_ignored",
];

/// The smallest key of a journal document created at `t`.
fn key_at(t: DateTime<Utc>) -> String {
    let secs = u32::try_from(t.timestamp().max(0)).unwrap_or(u32::MAX);
    format!("{secs:08x}{}", "0".repeat(16))
}

/// The roll-up: (through, sums). `None` before the first fold.
async fn read(db: &Database) -> Result<(Option<String>, Document), StoreError> {
    let found = db.collection::<Document>(ROLLUP).find_one(doc! { "_id": ROLLUP_ID }).await.map_err(map_err)?;
    Ok(match found {
        Some(d) => (d.get_str("through").ok().map(str::to_string), d.get_document("sums").cloned().unwrap_or_default()),
        None => (None, Document::new()),
    })
}

/// Sums of the journal's counter increments over `filter`, and the largest key summed.
async fn sums(db: &Database, filter: Document) -> Result<(Document, Option<String>), StoreError> {
    let mut group = doc! { "_id": Bson::Null, "last": { "$max": "$key" } };
    for n in COUNTERS {
        group.insert(n, doc! { "$sum": format!("$counters.{n}") });
    }
    let mut matched = filter;
    matched.insert("counters", doc! { "$exists": true });
    let mut cursor = db
        .collection::<Document>(JOURNAL)
        .aggregate([doc! { "$match": matched }, doc! { "$group": group }])
        .await
        .map_err(map_err)?;
    if !cursor.advance().await.map_err(map_err)? {
        return Ok((Document::new(), None));
    }
    let d: Document = cursor.deserialize_current().map_err(map_err)?;
    Ok((d.clone(), d.get_str("last").ok().map(str::to_string)))
}

/// The journal documents after `through`, keyed.
fn after(through: Option<&str>) -> Document {
    match through {
        Some(key) => doc! { "key": { "$gt": key } },
        None => doc! { "key": { "$exists": true } },
    }
}

/// The counters: the roll-up plus the journal after it.
pub(super) async fn counts(db: &Database) -> Result<Counts, StoreError> {
    let (mut through, mut folded) = read(db).await?;
    let (mut recent, mut unkeyed);
    let mut attempts = 0;
    loop {
        (recent, _) = sums(db, after(through.as_deref())).await?;
        (unkeyed, _) = sums(db, doc! { "key": { "$exists": false } }).await?;
        let (now_through, now_folded) = read(db).await?;
        attempts += 1;
        // A fold in between: read again against the roll-up as it is now.
        if now_through == through || attempts == 3 {
            break;
        }
        (through, folded) = (now_through, now_folded);
    }
    let total = |n: &str| unsigned(&folded, n) + unsigned(&recent, n) + unsigned(&unkeyed, n);
    Ok(Counts {
        applied_files: total("applied_files"),
        duplicate_files: total("duplicate_files"),
        records_applied: total("records_applied"),
        records_stale: total("records_stale"),
        records_unchanged: total("records_unchanged"),
        records_rejected: 0,
        records_dead_lettered: total("records_dead_lettered"),
        records_removed: total("records_removed"),
        records_ignored: total("records_ignored"),
    })
}

/// The oldest key a fold must not reach: the oldest journal document not copied out, and
/// the oldest commit pending under a lease.
async fn oldest_open(db: &Database) -> Result<Option<String>, StoreError> {
    let journal = db.collection::<Document>(JOURNAL);
    let open = journal.find_one(doc! { "done": false }).sort(doc! { "_id": 1 }).await.map_err(map_err)?;
    let mut oldest = open.and_then(|d| d.get_object_id("_id").ok());
    let leases = db.collection::<Document>(super::leases::LEASES);
    let mut cursor = leases.find(doc! { "pending.0": { "$exists": true } }).await.map_err(map_err)?;
    while cursor.advance().await.map_err(map_err)? {
        let lease: Document = cursor.deserialize_current().map_err(map_err)?;
        for p in lease.get_array("pending").map(|a| a.as_slice()).unwrap_or(&[]) {
            if let Some(id) = p.as_document().and_then(|d| d.get_object_id("_id").ok()) {
                oldest = Some(oldest.map_or(id, |o| o.min(id)));
            }
        }
    }
    Ok(oldest.map(|id| id.to_hex()))
}

/// Gives journal documents written before keys existed their key, oldest id first (a
/// thousand per fold). Returns the key of the oldest one still without, which no fold
/// may reach yet.
async fn key_older_documents(db: &Database) -> Result<Option<String>, StoreError> {
    let journal = db.collection::<Document>(JOURNAL);
    let unkeyed = doc! { "key": { "$exists": false } };
    let mut cursor = journal.find(unkeyed.clone()).sort(doc! { "_id": 1 }).limit(1000).await.map_err(map_err)?;
    let mut ids: Vec<ObjectId> = Vec::new();
    while cursor.advance().await.map_err(map_err)? {
        let d: Document = cursor.deserialize_current().map_err(map_err)?;
        ids.extend(d.get_object_id("_id").ok());
    }
    for id in ids {
        journal.update_one(doc! { "_id": id }, doc! { "$set": { "key": id.to_hex() } }).await.map_err(map_err)?;
    }
    let left = journal.find_one(unkeyed).sort(doc! { "_id": 1 }).await.map_err(map_err)?;
    Ok(left.and_then(|d| d.get_object_id("_id").ok()).map(|id| id.to_hex()))
}

/// Folds the journal documents older than [`KEEP`] into the roll-up, and deletes those
/// the previous fold covered. Returns how many were deleted. Safe to run from several instances at once.
pub(super) async fn fold(db: &Database, now: DateTime<Utc>) -> Result<u64, StoreError> {
    let unkeyed = key_older_documents(db).await?;
    let (through, folded) = read(db).await?;
    let limit = [Some(key_at(now - KEEP)), oldest_open(db).await?, unkeyed].into_iter().flatten().min();
    let Some(limit) = limit else { return Ok(0) };
    let range = match &through {
        Some(key) => doc! { "key": { "$gt": key, "$lt": &limit } },
        None => doc! { "key": { "$lt": &limit } },
    };
    let (new, last) = sums(db, range).await?;
    if let Some(last) = last {
        let mut total = Document::new();
        for n in COUNTERS {
            total.insert(n, super::numbers::signed(unsigned(&folded, n) + unsigned(&new, n)));
        }
        let rollup = db.collection::<Document>(ROLLUP);
        let moved = match &through {
            Some(old) => {
                let update = doc! { "$set": { "through": &last, "sums": total } };
                rollup
                    .update_one(doc! { "_id": ROLLUP_ID, "through": old }, update)
                    .await
                    .map_err(map_err)?
                    .modified_count
                    == 1
            }
            None => match rollup.insert_one(doc! { "_id": ROLLUP_ID, "through": &last, "sums": total }).await {
                Ok(_) => true,
                Err(e) if server_code(&e) == Some(DUPLICATE_KEY) => false, // another instance folded first
                Err(e) => return Err(map_err(e)),
            },
        };
        if !moved {
            return Ok(0); // another instance folded meanwhile; it deletes
        }
    }
    // What the previous fold covered (a reader may still be summing after it).
    let Some(previous) = through else { return Ok(0) };
    let deleted = db
        .collection::<Document>(JOURNAL)
        .delete_many(doc! { "key": { "$lte": &previous }, "done": true })
        .await
        .map_err(map_err)?;
    Ok(deleted.deleted_count)
}
