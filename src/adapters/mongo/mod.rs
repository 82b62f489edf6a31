//! The MongoDB store (production): records, ledger, streams and audit in one database.
//!
//! - Records: one document per identity, written only by the versioned upsert of
//!   `records.rs` (the version rule holds for every writer, concurrent or late).
//! - Ledger, streams, audit and counters: written through the journal of `journal.rs`,
//!   atomic per commit without multi-document transactions.
//! - A file's unit of work is **idempotent per step**, not one transaction: its records
//!   are upserted as they arrive, its rejects are keyed by (file, line), and the ledger
//!   entry is committed last. A crash part-way leaves the file pending in the ledger; it
//!   is processed again, and the version rule turns the lines already written into
//!   no-ops (counted as unchanged). Records of a file that has not finished may therefore
//!   be visible early — never an older version over a newer one.
//! - Broker receipts: one document per message id, inserted after its records; a
//!   redelivery finds it and counts nothing twice.
//! - Write concern: `majority` unless the URI sets `w`; indexes are created at open.

mod active;
mod commands;
mod errors;
mod full_files;
mod journal;
mod leases;
mod numbers;
mod records;
mod rollup;

use crate::core::full::{Sweep, Swept};
use crate::core::lease::Lease;
use crate::core::ledger::{FileState, LedgerEntry};
use crate::core::record::{Record, Reject, Tally};
use crate::ports::store::{
    AuditEntry, Commit, Counts, DeadLetter, DeliveredBatch, FileTicket, FileTxn, KnownName, RegionHistory, Shared,
    Snapshot, Store, StoreError, StoredRecord,
};
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use errors::{DUPLICATE_KEY, map_err};
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::{ClientOptions, WriteConcern};
use mongodb::{Client, Database, IndexModel};
use std::time::Duration;
use tokio::sync::mpsc;

const REJECTS: &str = "rejects";
const RECEIPTS: &str = "receipts";
const DEAD_LETTERS: &str = "dead_letters";
const SHARED: &str = "shared";
const DEFAULT_DATABASE: &str = "esr_ingest";
const EXPORT_BATCH: usize = 1000;

pub struct MongoStore {
    uri_shown: String,
    db: Database,
    /// The write concern as the command field (`run_command` does not add it).
    write_concern: Document,
    /// Commits by this process: the first and every [`FOLD_EVERY`]th fold the journal (`rollup.rs`).
    commits: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Every client this process opened, kept until [`shut_down_clients`].
static OPENED: std::sync::Mutex<Vec<Client>> = std::sync::Mutex::new(Vec::new());

/// Ends the server sessions of every client this process opened and closes their
/// connections; call it once, while the runtime still runs, before the process ends.
///
/// Why: when the last handle of a client is dropped, the driver ends its sessions in a
/// task of its own. At the end of a process that task can run while the runtime shuts
/// down its connection pool, and the driver then panics (an `unwrap` on a closed channel
/// in `mongodb::cmap`). Kept here, no handle is the last before this shutdown, and a
/// client shut down spawns nothing when dropped. Bounded: a server that does not answer
/// costs at most `limit`.
pub async fn shut_down_clients(limit: Duration) {
    let clients = std::mem::take(&mut *OPENED.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    let all = futures::future::join_all(clients.into_iter().map(|c| c.shutdown().immediate(true).into_future()));
    if tokio::time::timeout(limit, all).await.is_err() {
        tracing::warn!(limit = ?limit, "the MongoDB server did not answer the end of the sessions");
    }
}

/// How many commits of one process pass between two folds of the journal.
const FOLD_EVERY: u64 = 1000;

impl MongoStore {
    /// Connects, checks the server answers, and creates the indexes.
    pub async fn open(uri: &str) -> Result<Self, StoreError> {
        let shown = crate::adapters::redact_url(uri);
        let mut options = ClientOptions::parse(uri).await.map_err(|e| StoreError::Open(format!("{shown}: {e}")))?;
        options.app_name.get_or_insert_with(|| "esr-ingest".into());
        options.command_event_handler = Some(commands::counter());
        options.server_selection_timeout.get_or_insert(Duration::from_secs(10));
        options.connect_timeout.get_or_insert(Duration::from_secs(10));
        let concern = options.write_concern.clone().unwrap_or_else(WriteConcern::majority);
        options.write_concern = Some(concern.clone());
        let database = options.default_database.clone().unwrap_or_else(|| DEFAULT_DATABASE.into());
        let client = Client::with_options(options).map_err(|e| StoreError::Open(format!("{shown}: {e}")))?;
        OPENED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(client.clone());
        let db = client.database(&database);
        let write_concern = mongodb::bson::to_document(&concern)
            .map_err(|e| StoreError::Open(format!("{shown}: write concern: {e}")))?;
        let store = Self {
            uri_shown: format!("{shown} (database {database})"),
            db,
            write_concern,
            commits: Default::default(),
        };
        store.ping().await.map_err(|e| StoreError::Open(format!("{shown}: {e}")))?;
        store.create_indexes().await?;
        journal::replay(&store.db, &store.write_concern).await?;
        Ok(store)
    }

    /// Counts a commit; the first of the process and every [`FOLD_EVERY`]th after it fold
    /// the journal (a reader such as `status` never folds).
    async fn after_commit(&self) {
        if self.commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed).is_multiple_of(FOLD_EVERY) {
            self.maintain().await;
        }
    }

    /// Folds journal documents older than a week into the counter roll-up (`rollup.rs`),
    /// so what `counts()` reads stays bounded. Returns how many documents were folded.
    pub async fn fold_journal(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        rollup::fold(&self.db, now).await
    }

    /// [`MongoStore::fold_journal`] as maintenance: a failure is only logged (the journal
    /// is folded next time).
    async fn maintain(&self) {
        match self.fold_journal(Utc::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(folded = n, "journal folded into the counter roll-up"),
            Err(e) => tracing::warn!(error = %e, "folding the journal failed; it is tried again later"),
        }
    }

    async fn create_indexes(&self) -> Result<(), StoreError> {
        let indexes = [
            (RECEIPTS, doc! { "file": 1, "generation": 1 }),
            (DEAD_LETTERS, doc! { "file": 1, "generation": 1 }),
            (REJECTS, doc! { "file": 1, "line": 1 }),
            (journal::JOURNAL, doc! { "done": 1 }),
            (journal::JOURNAL, doc! { "key": 1 }),
            (journal::LEDGER, doc! { "state": 1 }),
        ];
        let indexes = indexes.into_iter().chain(active::indexes());
        for (collection, keys) in indexes {
            let index = IndexModel::builder().keys(keys).build();
            self.db.collection::<Document>(collection).create_index(index).await.map_err(map_err)?;
        }
        Ok(())
    }

    async fn all(&self, collection: &str, filter: Document, sort: Document) -> Result<Vec<Document>, StoreError> {
        active::find(&self.db, collection, filter, sort, None).await
    }

    async fn insert_rejects(&self, batch: &[Reject]) -> Result<(), StoreError> {
        let coll = self.db.collection::<Document>(REJECTS);
        for r in batch {
            let id = format!("{}/{}", r.file, r.line);
            let d = doc! {
                "_id": &id, "file": &*r.file, "line": i64::try_from(r.line).unwrap_or(i64::MAX),
                "reason": &r.reason, "raw": &r.raw,
            };
            coll.replace_one(doc! { "_id": id }, d).upsert(true).await.map_err(map_err)?;
        }
        Ok(())
    }
}

#[async_trait]
impl Store for MongoStore {
    fn describe(&self) -> String {
        format!("mongodb:{}", self.uri_shown)
    }

    fn atomic_files(&self) -> bool {
        false
    }

    async fn read_shared(&self, key: &str) -> Result<Option<Shared>, StoreError> {
        let found = self.db.collection::<Document>(SHARED).find_one(doc! { "_id": key }).await.map_err(map_err)?;
        found
            .map(|d| {
                let version = numbers::int(d.get("version"))
                    .and_then(|v| u64::try_from(v).ok())
                    .ok_or_else(|| StoreError::Corrupt(format!("shared {key}: no version")))?;
                let value = d.get_str("value").map_err(|_| StoreError::Corrupt(format!("shared {key}: no value")))?;
                Ok(Shared { version, value: value.to_string() })
            })
            .transpose()
    }

    async fn write_shared(&self, key: &str, expected: Option<u64>, value: String) -> Result<Option<u64>, StoreError> {
        let next = expected.unwrap_or(0) + 1;
        let command = match expected {
            None => doc! {
                "insert": SHARED,
                "documents": [{ "_id": key, "version": numbers::signed(next), "value": &value }],
                "writeConcern": self.write_concern.clone(),
            },
            Some(v) => doc! {
                "update": SHARED,
                "updates": [{
                    "q": { "_id": key, "version": numbers::signed(v) },
                    "u": { "$set": { "version": numbers::signed(next), "value": &value } },
                }],
                "writeConcern": self.write_concern.clone(),
            },
        };
        let reply = self.db.run_command(command).await.map_err(map_err)?;
        if let Ok(errors) = reply.get_array("writeErrors")
            && let Some(Bson::Document(first)) = errors.first()
        {
            return match numbers::int(first.get("code")) {
                Some(c) if c == i64::from(DUPLICATE_KEY) => Ok(None), // created by another writer first
                _ => Err(StoreError::Rejected(format!("shared {key}: {first}"))),
            };
        }
        let changed = numbers::int(reply.get("n")).unwrap_or(0);
        Ok((changed == 1).then_some(next))
    }

    async fn claim_lease(
        &self,
        name: &str,
        owner: &str,
        ttl: TimeDelta,
        now: DateTime<Utc>,
    ) -> Result<Option<Lease>, StoreError> {
        leases::claim(&self.db, &self.write_concern, name, owner, ttl, now).await
    }

    async fn release_lease(&self, name: &str, owner: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        leases::release(&self.db, &self.write_concern, name, owner, now).await
    }

    async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        leases::all(&self.db).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.db.run_command(doc! { "ping": 1 }).await.map_err(map_err).map(|_| ())
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        journal::replay(&self.db, &self.write_concern).await?;
        let ledger = self.all(journal::LEDGER, doc! {}, doc! { "_id": 1 }).await?;
        let streams = self.all(journal::STREAMS, doc! {}, doc! { "_id": 1 }).await?;
        Ok(Snapshot {
            ledger: ledger.iter().map(journal::ledger_entry).collect::<Result<_, _>>()?,
            streams: streams.iter().map(journal::stream_record).collect::<Result<_, _>>()?,
        })
    }

    async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        if commit.is_empty() {
            return Ok(());
        }
        journal::commit(&self.db, &self.write_concern, &commit).await?;
        self.after_commit().await;
        Ok(())
    }

    async fn active(&self) -> Result<Snapshot, StoreError> {
        journal::replay(&self.db, &self.write_concern).await?;
        active::active(&self.db).await
    }

    async fn known_names(&self) -> Result<Vec<KnownName>, StoreError> {
        journal::replay(&self.db, &self.write_concern).await?;
        active::known_names(&self.db).await
    }

    async fn ledger_lookup(
        &self,
        names: Vec<String>,
        positions: Vec<(String, u64)>,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        journal::replay(&self.db, &self.write_concern).await?;
        active::lookup(&self.db, &names, &positions).await
    }

    async fn region_history(&self, since: DateTime<Utc>) -> Result<Vec<RegionHistory>, StoreError> {
        journal::replay(&self.db, &self.write_concern).await?;
        active::region_history(&self.db, since).await
    }

    async fn recent_audit(&self, n: usize) -> Result<Vec<AuditEntry>, StoreError> {
        journal::replay(&self.db, &self.write_concern).await?;
        active::recent_audit(&self.db, n).await
    }

    async fn files_in_state(&self, state: FileState) -> Result<Vec<LedgerEntry>, StoreError> {
        journal::replay(&self.db, &self.write_concern).await?;
        let docs = self.all(journal::LEDGER, doc! { "state": state.as_str() }, doc! { "_id": 1 }).await?;
        docs.iter().map(journal::ledger_entry).collect()
    }

    async fn sweep(&self, sweep: &Sweep) -> Result<Swept, StoreError> {
        full_files::sweep(&self.db, sweep).await
    }

    async fn begin_file(&self, _ticket: FileTicket) -> Result<Box<dyn FileTxn>, StoreError> {
        Ok(Box::new(MongoFileTxn { store: self.clone_handle(), tally: Tally::default() }))
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        let mut counts = rollup::counts(&self.db).await?;
        // From the collection's metadata: constant cost, however many rejects are kept.
        counts.records_rejected =
            self.db.collection::<Document>(REJECTS).estimated_document_count().await.map_err(map_err)?;
        Ok(counts)
    }

    async fn rejects(&self, file: Option<String>) -> Result<Vec<Reject>, StoreError> {
        let filter = match file {
            Some(f) => doc! { "file": f },
            None => doc! {},
        };
        let docs = self.all(REJECTS, filter, doc! { "file": 1, "line": 1 }).await?;
        docs.iter()
            .map(|d| {
                Ok(Reject {
                    file: d.get_str("file").unwrap_or_default().into(),
                    line: numbers::int(d.get("line"))
                        .and_then(|n| u64::try_from(n).ok())
                        .ok_or_else(|| StoreError::Corrupt(format!("reject without a line: {d}")))?,
                    reason: d.get_str("reason").unwrap_or_default().into(),
                    raw: d.get_str("raw").unwrap_or_default().into(),
                })
            })
            .collect()
    }

    async fn audit_log(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let docs = self.all(journal::AUDIT, doc! {}, doc! { "_id": 1 }).await?;
        docs.iter().map(journal::audit_entry).collect()
    }

    async fn export(&self, sink: mpsc::Sender<Vec<StoredRecord>>) -> Result<u64, StoreError> {
        let mut cursor = self
            .db
            .collection::<Document>(records::RECORDS)
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .batch_size(EXPORT_BATCH as u32)
            .await
            .map_err(map_err)?;
        let (mut batch, mut sent) = (Vec::with_capacity(EXPORT_BATCH), 0u64);
        while cursor.advance().await.map_err(map_err)? {
            let d: Document = cursor.deserialize_current().map_err(map_err)?;
            batch.push(records::stored_record(&d)?);
            if batch.len() == EXPORT_BATCH {
                sent += batch.len() as u64;
                sink.send(std::mem::take(&mut batch)).await.map_err(|_| StoreError::Closed)?;
            }
        }
        if !batch.is_empty() {
            sent += batch.len() as u64;
            sink.send(batch).await.map_err(|_| StoreError::Closed)?;
        }
        Ok(sent)
    }

    async fn apply_delivered(&self, batches: Vec<DeliveredBatch>) -> Result<Vec<Option<Tally>>, StoreError> {
        self.apply_messages(&batches).await
    }

    async fn keep_rejects(&self, batch: Vec<Reject>) -> Result<(), StoreError> {
        self.insert_rejects(&batch).await
    }

    async fn mark_dead_lettered(&self, marks: Vec<DeadLetter>) -> Result<(), StoreError> {
        self.mark(marks).await
    }

    async fn delivery_progress(&self, file: &str, generation: u32) -> Result<Tally, StoreError> {
        self.progress(file, generation).await
    }
}

impl MongoStore {
    /// Broker messages, a few commands for all of them (not a few per message): their
    /// receipts looked up in one `find`; the records of the new ones upserted in `update`
    /// commands of up to a thousand lines, sorted by identity and version; their receipts
    /// inserted by one unordered `insert`; their lines' dead-letter marks cleared by one
    /// `delete`. Each step is idempotent: a message whose receipt another consumer
    /// inserted first (duplicate key) counts nothing here.
    async fn apply_messages(&self, batches: &[DeliveredBatch]) -> Result<Vec<Option<Tally>>, StoreError> {
        let ids: Vec<&str> = batches.iter().map(|b| b.receipt.as_str()).collect();
        let mut seen = std::collections::HashSet::new();
        let receipts = self.db.collection::<Document>(RECEIPTS);
        for chunk in ids.chunks(1000) {
            let mut cursor = receipts
                .find(doc! { "_id": { "$in": chunk.to_vec() } })
                .projection(doc! { "_id": 1 })
                .await
                .map_err(map_err)?;
            while cursor.advance().await.map_err(map_err)? {
                let d: Document = cursor.deserialize_current().map_err(map_err)?;
                seen.extend(d.get_str("_id").ok().map(str::to_string));
            }
        }
        // New, and the first of its id in this call.
        let mut fresh = vec![false; batches.len()];
        for (i, b) in batches.iter().enumerate() {
            fresh[i] = !seen.contains(&b.receipt) && seen.insert(b.receipt.clone());
        }
        let order = crate::ports::store::in_identity_order(batches, &fresh);
        let mut tallies = vec![Tally::default(); batches.len()];
        records::apply_slotted(&self.db, &self.write_concern, &order, &mut tallies).await?;
        let new: Vec<usize> = (0..batches.len()).filter(|i| fresh[*i]).collect();
        let mut counted = vec![false; batches.len()];
        for chunk in new.chunks(1000) {
            let documents: Vec<Document> = chunk
                .iter()
                .map(|&i| {
                    let (b, t) = (&batches[i], &tallies[i]);
                    doc! {
                        "_id": &b.receipt, "file": &b.file, "generation": i64::from(b.generation),
                        "applied": t.applied as i64, "stale": t.stale as i64, "unchanged": t.unchanged as i64,
                    }
                })
                .collect();
            let reply = self
                .db
                .run_command(doc! {
                    "insert": RECEIPTS, "documents": documents, "ordered": false,
                    "writeConcern": self.write_concern.clone(),
                })
                .await
                .map_err(map_err)?;
            if let Ok(wce) = reply.get_document("writeConcernError") {
                return Err(StoreError::Io(format!("mongodb write concern not satisfied: {wce}")));
            }
            let failed = records::write_errors(&reply);
            for (k, &i) in chunk.iter().enumerate() {
                match failed.get(&k) {
                    None => counted[i] = true,
                    Some((DUPLICATE_KEY, _)) => {} // another consumer counted it
                    Some((code, message)) => {
                        return Err(StoreError::Io(format!("mongodb refused a receipt (code {code}): {message}")));
                    }
                }
            }
        }
        let lines: Vec<String> = new
            .iter()
            .flat_map(|&i| {
                let b = &batches[i];
                b.records.iter().map(move |r| dead_letter_id(&b.file, b.generation, r.version.line))
            })
            .collect();
        let dead_letters = self.db.collection::<Document>(DEAD_LETTERS);
        for chunk in lines.chunks(10_000) {
            dead_letters.delete_many(doc! { "_id": { "$in": chunk.to_vec() } }).await.map_err(map_err)?;
        }
        Ok((0..batches.len()).map(|i| counted[i].then_some(tallies[i])).collect())
    }

    async fn mark(&self, marks: Vec<DeadLetter>) -> Result<(), StoreError> {
        let coll = self.db.collection::<Document>(DEAD_LETTERS);
        for m in marks {
            let id = dead_letter_id(&m.file, m.generation, m.line);
            let d = doc! {
                "_id": &id, "file": &m.file, "generation": i64::from(m.generation),
                "line": i64::try_from(m.line).unwrap_or(i64::MAX), "reason": &m.reason,
            };
            coll.replace_one(doc! { "_id": id }, d).upsert(true).await.map_err(map_err)?;
        }
        Ok(())
    }

    async fn progress(&self, file: &str, generation: u32) -> Result<Tally, StoreError> {
        let filter = doc! { "file": file, "generation": i64::from(generation) };
        let mut tally = Tally::default();
        for d in self.all(RECEIPTS, filter.clone(), doc! { "_id": 1 }).await? {
            let n = |k: &str| numbers::unsigned(&d, k);
            tally.applied += n("applied");
            tally.stale += n("stale");
            tally.unchanged += n("unchanged");
        }
        tally.dead_lettered =
            self.db.collection::<Document>(DEAD_LETTERS).count_documents(filter).await.map_err(map_err)?;
        Ok(tally)
    }
}

fn dead_letter_id(file: &str, generation: u32, line: u64) -> String {
    format!("{file}/{generation}/{line}")
}

impl MongoStore {
    fn clone_handle(&self) -> Self {
        Self {
            uri_shown: self.uri_shown.clone(),
            db: self.db.clone(),
            write_concern: self.write_concern.clone(),
            commits: self.commits.clone(),
        }
    }
}

/// One file's unit of work: idempotent steps (see the module docs).
struct MongoFileTxn {
    store: MongoStore,
    tally: Tally,
}

#[async_trait]
impl FileTxn for MongoFileTxn {
    async fn apply(&mut self, batch: Vec<Record>) -> Result<(), StoreError> {
        self.tally += records::apply_versioned(&self.store.db, &self.store.write_concern, &batch).await?;
        Ok(())
    }

    async fn reject(&mut self, batch: Vec<Reject>) -> Result<(), StoreError> {
        self.store.insert_rejects(&batch).await?;
        self.tally.rejected += batch.len() as u64;
        Ok(())
    }

    async fn settle(&mut self) -> Result<Tally, StoreError> {
        Ok(self.tally) // every step is written as it comes
    }

    async fn sweep(&mut self, sweep: &Sweep) -> Result<Swept, StoreError> {
        full_files::sweep(&self.store.db, sweep).await
    }

    async fn commit(self: Box<Self>, commit: Commit) -> Result<(), StoreError> {
        self.store.commit(commit).await
    }
}
