//! Region leases in MongoDB, and fenced commits.
//!
//! One document per lease in `leases`: `{_id, owner, token, expires_at (ms), pending}`.
//! Claims follow [`crate::core::lease::claim`] and are applied by a conditional update
//! that matches the document exactly as it was read (compare-and-set), or by an insert
//! that fails with a duplicate key when another instance created it first.
//!
//! Fencing without transactions: a fenced commit's journal documents are first pushed
//! onto the lease document's `pending` array by one update that matches the lease only
//! while it still has the commit's token. A single-document update is atomic, so either
//! the commit is recorded under a valid lease, or nothing is written (lease lost). Only
//! then are they copied into the journal (idempotently) and pulled from `pending`; a
//! crash in between leaves them in `pending`, and [`replay_pending`] finishes the job
//! before the next snapshot.

use super::errors::{DUPLICATE_KEY, map_err};
use super::journal::JOURNAL;
use super::numbers::{int, signed};
use crate::core::lease::{self, Claim, Fence, Lease};
use crate::ports::store::StoreError;
use chrono::{DateTime, TimeDelta, Utc};
use mongodb::Database;
use mongodb::bson::{Bson, Document, doc};

pub(super) const LEASES: &str = "leases";

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn lease_from(d: &Document) -> Result<Lease, StoreError> {
    let bad = |what: &str| StoreError::Corrupt(format!("lease document without {what}: {d}"));
    Ok(Lease {
        name: d.get_str("_id").map_err(|_| bad("_id"))?.to_string(),
        owner: d.get_str("owner").map_err(|_| bad("owner"))?.to_string(),
        token: int(d.get("token")).and_then(|t| u64::try_from(t).ok()).ok_or_else(|| bad("token"))?,
        expires_at: int(d.get("expires_at"))
            .and_then(DateTime::from_timestamp_millis)
            .ok_or_else(|| bad("expires_at"))?,
    })
}

/// The filter that matches the lease document exactly as `l` was read.
fn as_read(l: &Lease) -> Document {
    doc! { "_id": &l.name, "owner": &l.owner, "token": signed(l.token), "expires_at": millis(l.expires_at) }
}

fn changed(reply: &Document) -> Result<i64, StoreError> {
    if let Ok(errors) = reply.get_array("writeErrors")
        && let Some(Bson::Document(first)) = errors.first()
    {
        return match int(first.get("code")) {
            Some(c) if c == i64::from(DUPLICATE_KEY) => Ok(0),
            _ => Err(StoreError::Rejected(format!("lease write failed: {first}"))),
        };
    }
    if let Ok(wce) = reply.get_document("writeConcernError") {
        return Err(StoreError::Io(format!("mongodb write concern not satisfied: {wce}")));
    }
    Ok(int(reply.get("n")).unwrap_or(0))
}

async fn load(db: &Database, name: &str) -> Result<Option<Lease>, StoreError> {
    let found = db.collection::<Document>(LEASES).find_one(doc! { "_id": name }).await.map_err(map_err)?;
    found.as_ref().map(lease_from).transpose()
}

/// Writes `next` over `current` (as read) by compare-and-set; whether it was written.
async fn swap(db: &Database, wc: &Document, current: Option<&Lease>, next: &Lease) -> Result<bool, StoreError> {
    let fields = doc! { "owner": &next.owner, "token": signed(next.token), "expires_at": millis(next.expires_at) };
    let command = match current {
        None => {
            let mut document = doc! { "_id": &next.name, "pending": [] };
            document.extend(fields);
            doc! { "insert": LEASES, "documents": [document], "writeConcern": wc.clone() }
        }
        Some(c) => doc! {
            "update": LEASES,
            "updates": [{ "q": as_read(c), "u": { "$set": fields } }],
            "writeConcern": wc.clone(),
        },
    };
    Ok(changed(&db.run_command(command).await.map_err(map_err)?)? == 1)
}

pub(super) async fn claim(
    db: &Database,
    wc: &Document,
    name: &str,
    owner: &str,
    ttl: TimeDelta,
    now: DateTime<Utc>,
) -> Result<Option<Lease>, StoreError> {
    let current = load(db, name).await?;
    match lease::claim(name, current.as_ref(), owner, ttl, now) {
        Claim::Busy(_) => Ok(None),
        Claim::Renew(next) | Claim::Take(next) => Ok(swap(db, wc, current.as_ref(), &next).await?.then_some(next)),
    }
}

pub(super) async fn release(
    db: &Database,
    wc: &Document,
    name: &str,
    owner: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if let Some(current) = load(db, name).await?
        && let Some(next) = lease::release(&current, owner, now)
    {
        swap(db, wc, Some(&current), &next).await?;
    }
    Ok(())
}

pub(super) async fn all(db: &Database) -> Result<Vec<Lease>, StoreError> {
    let mut cursor = db.collection::<Document>(LEASES).find(doc! {}).sort(doc! { "_id": 1 }).await.map_err(map_err)?;
    let mut out = Vec::new();
    while cursor.advance().await.map_err(map_err)? {
        out.push(lease_from(&cursor.deserialize_current().map_err(map_err)?)?);
    }
    Ok(out)
}

/// The commit point of a fenced commit: records `journal` under the lease while it still
/// has the fence's token, or fails with [`StoreError::Fenced`] having written nothing.
pub(super) async fn push_pending(
    db: &Database,
    wc: &Document,
    fence: &Fence,
    journal: &[Document],
) -> Result<(), StoreError> {
    let command = doc! {
        "update": LEASES,
        "updates": [{
            "q": { "_id": &fence.lease, "token": signed(fence.token) },
            "u": { "$push": { "pending": { "$each": journal.to_vec() } } },
        }],
        "writeConcern": wc.clone(),
    };
    if changed(&db.run_command(command).await.map_err(map_err)?)? == 1 {
        return Ok(());
    }
    let holder = load(db, &fence.lease).await?;
    Err(StoreError::Fenced(match holder {
        Some(l) => format!(
            "{} is held with token {} by {}; this write carries token {}",
            fence.lease, l.token, l.owner, fence.token
        ),
        None => format!("{} is not held by anyone", fence.lease),
    }))
}

/// Puts journal documents into the journal (those already there are left as they are);
/// for each, whether this call put it there (`false`: it was there already).
pub(super) async fn into_journal(db: &Database, wc: &Document, journal: &[Document]) -> Result<Vec<bool>, StoreError> {
    let mut inserted = Vec::with_capacity(journal.len());
    for d in journal {
        let reply = db
            .run_command(doc! { "insert": JOURNAL, "documents": [d.clone()], "writeConcern": wc.clone() })
            .await
            .map_err(map_err)?;
        inserted.push(changed(&reply)? == 1); // a duplicate key means it is in the journal already
    }
    Ok(inserted)
}

/// Removes journal documents (now in the journal) from the lease's `pending`.
pub(super) async fn pull_pending(
    db: &Database,
    wc: &Document,
    lease: &str,
    journal: &[Document],
) -> Result<(), StoreError> {
    let ids: Vec<Bson> = journal.iter().filter_map(|d| d.get("_id").cloned()).collect();
    let command = doc! {
        "update": LEASES,
        "updates": [{ "q": { "_id": lease }, "u": { "$pull": { "pending": { "_id": { "$in": ids } } } } }],
        "writeConcern": wc.clone(),
    };
    changed(&db.run_command(command).await.map_err(map_err)?)?;
    Ok(())
}

/// Moves every pending fenced commit into the journal (before the journal's replay).
pub(super) async fn replay_pending(db: &Database, wc: &Document) -> Result<(), StoreError> {
    let mut cursor =
        db.collection::<Document>(LEASES).find(doc! { "pending.0": { "$exists": true } }).await.map_err(map_err)?;
    let mut found = Vec::new();
    while cursor.advance().await.map_err(map_err)? {
        found.push(cursor.deserialize_current().map_err(map_err)?);
    }
    for lease in found {
        let name = lease.get_str("_id").unwrap_or_default().to_string();
        let pending: Vec<Document> = lease
            .get_array("pending")
            .map(|a| a.iter().filter_map(|b| b.as_document().cloned()).collect())
            .unwrap_or_default();
        into_journal(db, wc, &pending).await?;
        pull_pending(db, wc, &name, &pending).await?;
    }
    Ok(())
}
