//! Commits without multi-document transactions: a journal.
//!
//! Invariant: a [`Commit`] (ledger entries, stream states, audit entries, counter
//! increments) is first written as **one journal document** — a single-document write
//! is atomic in MongoDB, on a standalone server as on a replica set — and only then
//! copied into the `ledger`, `streams` and `audit` collections by idempotent upserts,
//! after which the journal document is marked done. A crash between the two steps leaves
//! a journal document not done; it is copied again (same result) before the next
//! snapshot. Counters are never incremented in place: they are the sum of the journal's
//! increments, so a replay cannot count twice.
//!
//! Why not transactions: they need a replica set, and the store must run on a standalone
//! server too. Why not plain sequential writes: a crash between them could leave the
//! stream advanced without its ledger entry, or a counter counted twice.

use super::errors::map_err;
use super::numbers::{signed, unsigned};
use crate::core::ledger::{Conflict, FileState, LedgerEntry};
use crate::core::name::FileName;
use crate::core::record::Tally;
use crate::core::sequencer::StreamRecord;
use crate::ports::store::{AuditEntry, Commit, StoreError};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, Document, doc};
use mongodb::{Collection, Database};

pub(super) const JOURNAL: &str = "journal";
pub(super) const LEDGER: &str = "ledger";
pub(super) const STREAMS: &str = "streams";
pub(super) const AUDIT: &str = "audit";
/// Ledger entries per journal document (keeps each well under the 16 MiB limit; a
/// larger commit — a first listing of a huge folder — spans several documents, each
/// atomic and all idempotent).
const LEDGER_PER_DOCUMENT: usize = 5000;

pub(super) fn text_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(super) fn time(d: &Document, k: &str) -> Result<DateTime<Utc>, StoreError> {
    let s = d.get_str(k).map_err(|_| StoreError::Corrupt(format!("missing time {k}")))?;
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("time {k} {s:?}: {e}")))
}

fn int(d: &Document, k: &str) -> Option<i64> {
    super::numbers::int(d.get(k))
}

fn opt_str(d: &Document, k: &str) -> Option<String> {
    d.get_str(k).ok().map(str::to_string)
}

fn tally_doc(t: &Tally) -> Document {
    doc! {
        "applied": signed(t.applied), "stale": signed(t.stale), "unchanged": signed(t.unchanged),
        "rejected": signed(t.rejected), "dead_lettered": signed(t.dead_lettered),
        "removed": signed(t.removed), "ignored": signed(t.ignored),
    }
}

fn tally_from(d: &Document) -> Tally {
    Tally {
        applied: unsigned(d, "applied"),
        stale: unsigned(d, "stale"),
        unchanged: unsigned(d, "unchanged"),
        rejected: unsigned(d, "rejected"),
        dead_lettered: unsigned(d, "dead_lettered"),
        removed: unsigned(d, "removed"),
        ignored: unsigned(d, "ignored"),
    }
}

pub(super) fn ledger_doc(e: &LedgerEntry) -> Document {
    let batch = e.batch.as_ref().map(|b| {
        doc! { "region": &b.region, "kind": &b.kind, "date": b.date.format("%Y-%m-%d").to_string(), "seq": signed(b.seq) }
    });
    let conflict = e.conflict.as_ref().map(|c| {
        doc! { "fingerprint": &c.fingerprint, "sha256": &c.sha256, "reason": &c.reason, "at": text_time(c.at) }
    });
    doc! {
        "_id": &e.name,
        "key": &e.key,
        "batch": batch,
        "size": signed(e.size),
        "fingerprint": &e.fingerprint,
        "sha256": &e.sha256,
        "state": e.state.as_str(),
        "reason": &e.reason,
        "conflict": conflict,
        "first_seen": text_time(e.first_seen),
        "updated_at": text_time(e.updated_at),
        "record_lines": signed(e.record_lines),
        "tally": tally_doc(&e.tally),
        "generation": i64::from(e.generation),
        "counted": e.counted,
    }
}

pub(super) fn ledger_entry(d: &Document) -> Result<LedgerEntry, StoreError> {
    let name = d.get_str("_id").map_err(|_| StoreError::Corrupt("ledger document without _id".into()))?.to_string();
    let corrupt = |what: &str| StoreError::Corrupt(format!("ledger document {name}: {what}"));
    let batch = match d.get_document("batch") {
        Ok(b) => Some(FileName {
            name: name.clone(),
            region: opt_str(b, "region").ok_or_else(|| corrupt("batch.region"))?,
            kind: opt_str(b, "kind").ok_or_else(|| corrupt("batch.kind"))?,
            date: NaiveDate::parse_from_str(b.get_str("date").map_err(|_| corrupt("batch.date"))?, "%Y-%m-%d")
                .map_err(|_| corrupt("batch.date"))?,
            seq: unsigned(b, "seq"),
        }),
        Err(_) => None,
    };
    let conflict = match d.get_document("conflict") {
        Ok(c) => Some(Conflict {
            fingerprint: opt_str(c, "fingerprint").unwrap_or_default(),
            sha256: opt_str(c, "sha256").unwrap_or_default(),
            reason: opt_str(c, "reason").unwrap_or_default(),
            at: time(c, "at")?,
        }),
        Err(_) => None,
    };
    let state = d.get_str("state").ok().and_then(FileState::parse).ok_or_else(|| corrupt("state"))?;
    let generation = u32::try_from(unsigned(d, "generation")).map_err(|_| corrupt("generation"))?;
    Ok(LedgerEntry {
        key: opt_str(d, "key").ok_or_else(|| corrupt("key"))?,
        batch,
        size: unsigned(d, "size"),
        fingerprint: opt_str(d, "fingerprint").unwrap_or_default(),
        sha256: opt_str(d, "sha256"),
        state,
        reason: opt_str(d, "reason"),
        conflict,
        first_seen: time(d, "first_seen")?,
        updated_at: time(d, "updated_at")?,
        record_lines: unsigned(d, "record_lines"),
        tally: d.get_document("tally").map(tally_from).unwrap_or_default(),
        generation,
        // Written before the flag existed: counted once applied, or delivered again.
        counted: d.get_bool("counted").unwrap_or(state == FileState::Applied || generation > 1),
        name,
    })
}

pub(super) fn stream_record(d: &Document) -> Result<StreamRecord, StoreError> {
    let region = opt_str(d, "_id").ok_or_else(|| StoreError::Corrupt("stream document without _id".into()))?;
    let skipped = d
        .get_array("skipped")
        .map(|a| {
            a.iter()
                .filter_map(|b| match b {
                    Bson::Int64(v) => u64::try_from(*v).ok(),
                    Bson::Int32(v) => u64::try_from(*v).ok(),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(StreamRecord {
        next_seq: int(d, "next_seq").and_then(|v| u64::try_from(v).ok()),
        waiting_since: if d.get_str("waiting_since").is_ok() { Some(time(d, "waiting_since")?) } else { None },
        skipped,
        region,
    })
}

pub(super) fn audit_entry(d: &Document) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        at: time(d, "at")?,
        actor: opt_str(d, "actor").unwrap_or_default(),
        action: opt_str(d, "action").unwrap_or_default(),
        region: opt_str(d, "region"),
        seq: int(d, "seq").and_then(|v| u64::try_from(v).ok()),
        detail: opt_str(d, "detail").unwrap_or_default(),
    })
}

fn counters_doc(c: &Commit) -> Document {
    let d = &c.counters;
    doc! {
        "applied_files": signed(d.applied_files),
        "duplicate_files": signed(d.duplicate_files),
        "records_applied": signed(d.records.applied),
        "records_stale": signed(d.records.stale),
        "records_unchanged": signed(d.records.unchanged),
        "records_dead_lettered": signed(d.records.dead_lettered),
        "records_removed": signed(d.records.removed),
        "records_ignored": signed(d.records.ignored),
    }
}

/// The journal documents of a commit (several when its ledger is large).
fn journal_documents(c: &Commit) -> Vec<Document> {
    let chunks: Vec<&[LedgerEntry]> =
        if c.ledger.is_empty() { vec![&[]] } else { c.ledger.chunks(LEDGER_PER_DOCUMENT).collect() };
    let last = chunks.len() - 1;
    let order = c.fence.as_ref().map(|_| Attempts::order_of(c.id.as_deref()));
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, ledger)| {
            let id = journal_id(c.id.as_deref(), i);
            let mut journal = doc! {
                // The id as text too: ordered like the id, and comparable on every
                // MongoDB-wire server (the one in CI cannot compare ObjectIds in a range).
                "key": id.to_hex(),
                "_id": id,
                "done": false,
                "ledger": ledger.iter().map(ledger_doc).collect::<Vec<_>>(),
            };
            if let (Some(fence), Some(order)) = (&c.fence, order) {
                journal.insert("fence_lease", &fence.lease);
                journal.insert("fence_token", signed(fence.token));
                journal.insert("fence_order", order);
            }
            if i == last {
                journal.insert("streams", c.streams.iter().map(stream_doc).collect::<Vec<_>>());
                journal.insert("audit", c.audit.iter().map(audit_doc).collect::<Vec<_>>());
                journal.insert("counters", counters_doc(c));
            }
            journal
        })
        .collect()
}

/// The order of a fenced commit among the commits made under the same lease token, which
/// only its owner makes: each one of this process is later than the one before (a hybrid
/// clock: the time in microseconds, raised past the last value given). An owner restarted
/// on the same host and process id renews its predecessor's token; its commits still come
/// after the predecessor's, unless the clock went back by more than the restart took.
fn next_order() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = Utc::now().timestamp_micros();
    let raise = |last: i64| Some(now.max(last.saturating_add(1)));
    // `fetch_update` returns the value it replaced; `raise` never refuses.
    let last = LAST.fetch_update(Ordering::SeqCst, Ordering::SeqCst, raise).unwrap_or_else(|last| last);
    now.max(last.saturating_add(1))
}

/// The orders given to commits of this process that have not succeeded yet, by commit
/// id, so every attempt of a commit is stamped alike. A retried commit whose first
/// attempt reached its commit point (recorded under the lease) but not the journal is
/// put in the journal and copied out from the retry's documents: stamped with a later
/// order, they could win over a later commit of the same owner written meanwhile (a
/// counted file put back to delivered, and counted again). Ids sort in creation order,
/// so past [`Attempts::KEPT`] the oldest (commits long given up) are forgotten.
struct Attempts;

impl Attempts {
    const KEPT: usize = 4096;

    fn orders() -> std::sync::MutexGuard<'static, std::collections::BTreeMap<String, i64>> {
        static ORDERS: std::sync::Mutex<std::collections::BTreeMap<String, i64>> =
            std::sync::Mutex::new(std::collections::BTreeMap::new());
        // A panic while holding it (none can: map operations only) would leave the map
        // as it was; its contents stay usable.
        ORDERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The order of commit `id`: the one its first attempt got, else a new one.
    fn order_of(id: Option<&str>) -> i64 {
        let Some(id) = id else { return next_order() };
        let mut orders = Self::orders();
        if let Some(order) = orders.get(id) {
            return *order;
        }
        let order = next_order();
        orders.insert(id.to_string(), order);
        while orders.len() > Self::KEPT {
            orders.pop_first();
        }
        order
    }

    /// Commit `id` succeeded: a later attempt (its reply lost on the way to the caller)
    /// finds its documents in the journal and copies out those ([`copy_out_recorded`]).
    fn succeeded(id: Option<&str>) {
        if let Some(id) = id {
            Self::orders().remove(id);
        }
    }
}

/// Test hook: `ESR_INGEST_FAULT=mongo-fail-after-pending:LEASE` fails the first fenced
/// commit under lease `LEASE` once, right after its commit point (recorded under the
/// lease, not yet in the journal), as a lost reply would. Read once; inert unless set.
fn fail_after_pending(lease: &str) -> bool {
    use std::sync::atomic::{AtomicBool, Ordering};
    static ARMED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    static FIRED: AtomicBool = AtomicBool::new(false);
    let armed = ARMED.get_or_init(|| crate::adapters::fault_hook("mongo-fail-after-pending"));
    armed.as_deref() == Some(lease) && !FIRED.swap(true, Ordering::SeqCst)
}

/// The id of a commit's `chunk`-th journal document: derived from the commit's idempotency
/// key (laid out like an ObjectId: time, process value, counter), so a retried commit
/// writes the same documents (a duplicate key then means the earlier attempt got there); a
/// fresh id for a commit without a key. Later chunks change the process value, never the
/// counter, so they cannot meet another commit of the same process.
fn journal_id(commit: Option<&str>, chunk: usize) -> ObjectId {
    let Some(mut bytes) = commit.and_then(|id| hex::decode(id).ok()).and_then(|b| <[u8; 12]>::try_from(b).ok()) else {
        return ObjectId::new();
    };
    let process =
        u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) ^ u32::try_from(chunk).unwrap_or(u32::MAX);
    bytes[5..9].copy_from_slice(&process.to_be_bytes());
    ObjectId::from_bytes(bytes)
}

/// Writes a commit: journal first, then the collections, then marks it done.
pub(super) async fn commit(db: &Database, wc: &Document, c: &Commit) -> Result<(), StoreError> {
    let documents = journal_documents(c);
    if !c.expect_uncounted.is_empty() && !recorded(db, &documents).await? {
        expect_uncounted(db, &c.expect_uncounted).await?;
    }
    if let Some(fence) = &c.fence {
        // All of a fenced commit is recorded at once under the lease (its commit point),
        // then moved into the journal.
        super::leases::push_pending(db, wc, fence, &documents).await?;
        if fail_after_pending(&fence.lease) {
            return Err(StoreError::Io("test hook: the reply after the commit point was lost".into()));
        }
        let inserted = super::leases::into_journal(db, wc, &documents).await?;
        super::leases::pull_pending(db, wc, &fence.lease, &documents).await?;
        for (journal, inserted) in documents.iter().zip(inserted) {
            if inserted {
                copy_out(db, journal).await?;
            } else {
                copy_out_recorded(db, journal).await?;
            }
        }
        Attempts::succeeded(c.id.as_deref());
        return Ok(());
    }
    for journal in documents {
        // A duplicate key: an earlier attempt of this commit is in the journal already.
        super::leases::into_journal(db, wc, std::slice::from_ref(&journal)).await?;
        copy_out(db, &journal).await?;
    }
    Ok(())
}

/// Whether an earlier attempt of this commit reached its commit point (its first journal
/// document is in the journal, or pending under a lease): its conditions held then.
async fn recorded(db: &Database, documents: &[Document]) -> Result<bool, StoreError> {
    let Some(id) = documents.first().and_then(|d| d.get("_id")).cloned() else { return Ok(false) };
    let journal = db.collection::<Document>(JOURNAL);
    if journal.find_one(doc! { "_id": id.clone() }).await.map_err(map_err)?.is_some() {
        return Ok(true);
    }
    let leases = db.collection::<Document>(super::leases::LEASES);
    Ok(leases.find_one(doc! { "pending._id": id }).await.map_err(map_err)?.is_some())
}

/// Refuses a commit that would count a file another writer counted meanwhile. Checked
/// before the commit point, not atomically with it: on the production path only the
/// fenced owner of a region writes its files, so the window is a backfill racing it.
async fn expect_uncounted(db: &Database, names: &[String]) -> Result<(), StoreError> {
    let ledger = db.collection::<Document>(LEDGER);
    let mut cursor = ledger.find(doc! { "_id": { "$in": names.to_vec() } }).await.map_err(map_err)?;
    while cursor.advance().await.map_err(map_err)? {
        let entry = ledger_entry(&cursor.deserialize_current().map_err(map_err)?)?;
        if entry.counted {
            return Err(StoreError::Superseded(format!("{} was applied by another writer", entry.name)));
        }
    }
    Ok(())
}

fn stream_doc(s: &StreamRecord) -> Document {
    doc! {
        "_id": &s.region,
        "next_seq": s.next_seq.map(signed),
        "waiting_since": s.waiting_since.map(text_time),
        "skipped": s.skipped.iter().map(|v| signed(*v)).collect::<Vec<_>>(),
    }
}

fn audit_doc(a: &AuditEntry) -> Document {
    doc! {
        "at": text_time(a.at), "actor": &a.actor, "action": &a.action, "region": &a.region,
        "seq": a.seq.map(signed), "detail": &a.detail,
    }
}

/// Copies out the journal's own version of a retried commit's document. A retry after an
/// attempt that succeeded (its reply lost on the way to the caller, so [`Attempts`] has
/// forgotten its order) builds its documents with a later order; copied out, that order
/// could let the retried, older commit win over a later commit of the same token. The
/// version recorded first is the one every copy carries. Nothing to do when it is done
/// already.
async fn copy_out_recorded(db: &Database, retried: &Document) -> Result<(), StoreError> {
    let id = retried.get("_id").cloned().ok_or_else(|| StoreError::Corrupt("journal document without _id".into()))?;
    let recorded = db.collection::<Document>(JOURNAL).find_one(doc! { "_id": id }).await.map_err(map_err)?;
    match recorded {
        Some(recorded) if !recorded.get_bool("done").unwrap_or(false) => copy_out(db, &recorded).await,
        _ => Ok(()),
    }
}

/// Copies one journal document into the collections (idempotent) and marks it done.
async fn copy_out(db: &Database, journal: &Document) -> Result<(), StoreError> {
    let id = journal.get_object_id("_id").map_err(|_| StoreError::Corrupt("journal document without _id".into()))?;
    let ledger = db.collection::<Document>(LEDGER);
    let fence = journal
        .get_str("fence_lease")
        .ok()
        .zip(super::numbers::int(journal.get("fence_token")))
        .map(|(lease, token)| Fenced { lease, token, order: super::numbers::int(journal.get("fence_order")) });
    for e in journal.get_array("ledger").map(|a| a.as_slice()).unwrap_or(&[]) {
        let Some(e) = e.as_document() else { continue };
        copy_ledger_entry(&ledger, e, fence.as_ref()).await?;
    }
    let streams = db.collection::<Document>(STREAMS);
    for s in journal.get_array("streams").map(|a| a.as_slice()).unwrap_or(&[]) {
        let Some(s) = s.as_document() else { continue };
        let skipped = s.get_array("skipped").cloned().unwrap_or_default();
        // `next_seq` only moves forward (`$max`), so a writer holding an older stream
        // state (an operator's skip racing a pass) cannot move it back.
        let mut update = doc! { "$addToSet": { "skipped": { "$each": skipped } } };
        if let Some(next) = s.get("next_seq").filter(|n| !matches!(n, Bson::Null)) {
            update.insert("$max", doc! { "next_seq": next.clone() });
        }
        let region = s.get_str("_id").unwrap_or_default();
        streams.update_one(doc! { "_id": region }, update).upsert(true).await.map_err(map_err)?;
        // How long the stream has been waiting is set as a ledger entry is: a late copy of
        // an earlier commit cannot restart (or clear) the clock of the gap alert.
        let waiting = doc! { "waiting_since": s.get("waiting_since").cloned().unwrap_or(Bson::Null) };
        if !write_fenced(&streams, region, waiting, fence.as_ref()).await? {
            tracing::debug!(region = %region, "a stream's waiting time written by a later commit of its lease is kept");
        }
    }
    let audit = db.collection::<Document>(AUDIT);
    for (i, a) in journal.get_array("audit").map(|a| a.as_slice()).unwrap_or(&[]).iter().enumerate() {
        let Some(a) = a.as_document() else { continue };
        // Ordered by journal id (creation order), then position in the commit.
        let mut a = a.clone();
        let audit_id = format!("{}/{i:06}", id.to_hex());
        a.insert("_id", &audit_id);
        audit.replace_one(doc! { "_id": audit_id }, a).upsert(true).await.map_err(map_err)?;
    }
    db.collection::<Document>(JOURNAL)
        .update_one(doc! { "_id": id }, doc! { "$set": { "done": true } })
        .await
        .map_err(map_err)?;
    Ok(())
}

/// The fence of a journal document: its lease, the token it was written under, and its
/// order among that token's commits ([`next_order`]; `None` in documents written before
/// orders were).
struct Fenced<'a> {
    lease: &'a str,
    token: i64,
    order: Option<i64>,
}

/// Writes one ledger document from the journal (see [`write_fenced`]).
async fn copy_ledger_entry(
    ledger: &Collection<Document>,
    e: &Document,
    fence: Option<&Fenced<'_>>,
) -> Result<(), StoreError> {
    let name = e.get_str("_id").unwrap_or_default();
    let mut fields = e.clone();
    fields.remove("_id");
    if !write_fenced(ledger, name, fields, fence).await? {
        tracing::warn!(file = %name, "a ledger entry written by a later commit of its lease is kept; the older copy is dropped");
    }
    Ok(())
}

/// Sets `fields` of document `id` from a journal document; `false` when a later commit
/// holds it (nothing written). A fenced commit's copy records its token and order under
/// its lease (`fences.<lease>`, `orders.<lease>`) and never overwrites what a later
/// commit of the same lease wrote:
/// - under a newer token: an owner that paused between recording a commit and copying it
///   out, and lost its lease meanwhile, cannot put back an older ledger entry over its
///   successor's;
/// - under the same token with a higher order: a reader that found the owner's commit not
///   yet done and copies it out late (a scrape, another instance's pass, each copying out
///   what is pending before it reads) cannot put back what the owner has since replaced
///   (a file counted would count as not yet counted, and be applied again).
///
/// Tokens of different leases are not compared (a bad name's entry moves to its region's
/// lease once the name is judged a batch file). Unfenced writes (an operator's skip) set
/// the fields and keep the tokens.
///
/// A compare-and-set, because the MongoDB-wire stand-in in CI evaluates a filter with
/// `$or`/`$not` wrongly, and separate conditional updates (older token; same token and
/// no later order; no token; else insert) let two copies racing on a document's first
/// fenced write both miss and the later one be refused: read the stored stamp, decide
/// with [`Stamp::yields_to`], then write only if the document still carries the stamp
/// read (or insert it if there was none). A write that finds another stamp followed a
/// concurrent copy, which only ever raises it, so the read is repeated; a copy that
/// keeps losing to fresh writes gives up as `Busy` (retried) after [`FENCED_ATTEMPTS`].
async fn write_fenced(
    collection: &Collection<Document>,
    id: &str,
    fields: Document,
    fence: Option<&Fenced<'_>>,
) -> Result<bool, StoreError> {
    let Some(&Fenced { lease, token, order }) = fence else {
        collection.update_one(doc! { "_id": id }, doc! { "$set": fields }).upsert(true).await.map_err(map_err)?;
        return Ok(true);
    };
    let ours = Stamp { token, order };
    let key = fence_key(lease);
    let lease = key.as_ref();
    let (token_path, order_path) = (format!("fences.{lease}"), format!("orders.{lease}"));
    let mut set = fields.clone();
    set.insert(token_path.as_str(), token);
    if let Some(order) = order {
        set.insert(order_path.as_str(), order);
    }
    // A copy without an order (written before orders were) clears the order a commit of
    // an older token left, so a later copy without one under this token still passes.
    let update = match order {
        Some(_) => doc! { "$set": set },
        None => doc! { "$set": set, "$unset": { order_path.as_str(): "" } },
    };
    for _ in 0..FENCED_ATTEMPTS {
        let Some(stored) = collection.find_one(doc! { "_id": id }).await.map_err(map_err)? else {
            let mut fresh = fields.clone();
            fresh.insert("_id", id);
            fresh.insert("fences", doc! { lease: token });
            if let Some(order) = order {
                fresh.insert("orders", doc! { lease: order });
            }
            match collection.insert_one(fresh).await {
                Ok(_) => return Ok(true),
                // Another copy created it meanwhile: read its stamp.
                Err(e) if super::errors::server_code(&e) == Some(super::errors::DUPLICATE_KEY) => continue,
                Err(e) => return Err(map_err(e)),
            }
        };
        let held = |field: &str| stored.get_document(field).ok().and_then(|d| d.get(lease)).cloned();
        let (held_token, held_order) = (held("fences"), held("orders"));
        let stamp = super::numbers::int(held_token.as_ref())
            .map(|token| Stamp { token, order: super::numbers::int(held_order.as_ref()) });
        if stamp.is_some_and(|held| !held.yields_to(ours)) {
            return Ok(false);
        }
        // Exactly the stamp read: the stored values themselves, or their absence.
        let absent = || Bson::Document(doc! { "$exists": false });
        let mut filter = doc! { "_id": id };
        filter.insert(token_path.as_str(), held_token.unwrap_or_else(absent));
        filter.insert(order_path.as_str(), held_order.unwrap_or_else(absent));
        if collection.update_one(filter, update.clone()).await.map_err(map_err)?.matched_count > 0 {
            return Ok(true);
        }
    }
    Err(StoreError::Busy(format!("{id}: the copy lost {FENCED_ATTEMPTS} compare-and-sets to other copies")))
}

/// The field name a lease's stamp is kept under (`fences.<key>`, `orders.<key>`): the
/// lease name with `%`, `.` and `$` percent-encoded, because MongoDB splits a path at
/// every dot (a region a custom `name_pattern` allows to contain one would be written
/// nested and read flat, and no copy would ever match again). Names without those
/// characters, such as every `region/XYZ` of the default profile, are kept as they are,
/// so documents written before keep their stamps.
fn fence_key(lease: &str) -> std::borrow::Cow<'_, str> {
    if !lease.contains(['%', '.', '$']) {
        return std::borrow::Cow::Borrowed(lease);
    }
    let mut key = String::with_capacity(lease.len() + 8);
    for c in lease.chars() {
        match c {
            '%' => key.push_str("%25"),
            '.' => key.push_str("%2E"),
            '$' => key.push_str("%24"),
            c => key.push(c),
        }
    }
    std::borrow::Cow::Owned(key)
}

/// How many times [`write_fenced`] reads a document's stamp again after losing its
/// compare-and-set to a concurrent copy before it gives up (the commit is retried).
const FENCED_ATTEMPTS: usize = 32;

/// What a fenced copy wrote under one lease: its token and its order among that token's
/// commits (`None` for a commit from before orders).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    token: i64,
    order: Option<i64>,
}

impl Stamp {
    /// Whether a copy stamped `later` may write over what this stamp wrote: a newer token,
    /// or the same token and an order not earlier (the same commit copied again is
    /// idempotent). A stored stamp without an order yields to any copy of its token; a copy
    /// without an order does not replace an ordered one of its token.
    fn yields_to(self, later: Stamp) -> bool {
        (self.token, self.order) <= (later.token, later.order)
    }
}

/// Copies out every journal document not marked done (after a crash), oldest first.
pub(super) async fn replay(db: &Database, wc: &Document) -> Result<(), StoreError> {
    super::leases::replay_pending(db, wc).await?;
    let mut cursor = db
        .collection::<Document>(JOURNAL)
        .find(doc! { "done": false })
        .sort(doc! { "_id": 1 })
        .await
        .map_err(map_err)?;
    let mut pending = Vec::new();
    while cursor.advance().await.map_err(map_err)? {
        pending.push(cursor.deserialize_current().map_err(map_err)?);
    }
    for journal in &pending {
        copy_out(db, journal).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Stamp, fence_key};
    use proptest::prelude::*;

    #[test]
    fn a_lease_names_stamp_key_has_no_dot_or_dollar_and_keeps_plain_names() {
        assert_eq!(fence_key("region/SEV"), "region/SEV");
        assert_eq!(fence_key("region/A.B"), "region/A%2EB");
        assert_eq!(fence_key("region/$x%"), "region/%24x%25");
        assert_ne!(fence_key("region/A.B"), fence_key("region/A%2EB"), "distinct names keep distinct keys");
    }

    fn stamp(token: i64, order: Option<i64>) -> Stamp {
        Stamp { token, order }
    }

    #[test]
    fn a_stamp_yields_to_a_newer_token_and_to_a_later_or_equal_order_of_its_own() {
        assert!(stamp(1, Some(9)).yields_to(stamp(2, Some(1))), "a newer token");
        assert!(stamp(1, Some(9)).yields_to(stamp(2, None)), "a newer token without an order");
        assert!(stamp(2, Some(3)).yields_to(stamp(2, Some(3))), "the same commit copied again");
        assert!(stamp(2, Some(3)).yields_to(stamp(2, Some(4))), "a later commit of the token");
        assert!(stamp(2, None).yields_to(stamp(2, Some(1))), "an ordered commit over one from before orders");
        assert!(stamp(2, None).yields_to(stamp(2, None)), "commits from before orders copy out in turn");
        assert!(!stamp(2, Some(4)).yields_to(stamp(2, Some(3))), "an earlier commit of the token");
        assert!(!stamp(2, Some(1)).yields_to(stamp(2, None)), "a commit from before orders over an ordered one");
        assert!(!stamp(3, None).yields_to(stamp(2, Some(9))), "an older token");
    }

    proptest! {
        /// Whatever order racing copies land in, compare-and-set over `yields_to` leaves
        /// the greatest stamp: every stamp a copy finds yields to the greatest, so the
        /// greatest is never refused, and nothing is written over it but itself.
        #[test]
        fn compare_and_set_leaves_the_greatest_stamp(
            copies in proptest::collection::vec((0i64..4, proptest::option::of(0i64..4)), 1..8),
        ) {
            let mut stored: Option<Stamp> = None;
            for (token, order) in &copies {
                let copy = stamp(*token, *order);
                if stored.is_none_or(|held| held.yields_to(copy)) {
                    stored = Some(copy);
                }
            }
            let greatest = copies.iter().map(|&(t, o)| (t, o)).max().map(|(t, o)| stamp(t, o));
            prop_assert_eq!(stored, greatest);
        }
    }
}
