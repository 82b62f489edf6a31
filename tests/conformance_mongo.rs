//! The store conformance suite against MongoDB-wire servers.
//!
//! - `wire_server`: always, against the server `scripts/test.sh` starts
//!   (`ESR_TEST_MONGO_URI`; in CI that is nx-27017, a wire-compatible stand-in backed by
//!   SQLite — it proves the commands and the version rule, not MongoDB's own behaviour
//!   under replication, elections or write-concern timeouts);
//! - `real_mongodb`: the same suite whenever `ESR_TEST_MONGODB_URI` names a real MongoDB
//!   (6.0 or newer); without it those tests say so on stderr and pass.
//!
//! Each test gets its own database.

mod common;
mod conformance;

use esr_ingest::adapters::mongo::MongoStore;
use esr_ingest::ports::store::Store;
use std::sync::Arc;

/// A fresh database per store, never one of an earlier run on the same server by a
/// process with the same id.
fn database_uri(base: &str) -> String {
    let (base, query) = match base.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (base, String::new()),
    };
    let name = common::broker::unique("esr_test").replace('-', "_");
    format!("{}/{name}{query}", base.trim_end_matches('/'))
}

async fn wire_server() -> ((), Arc<dyn Store>) {
    let base = std::env::var("ESR_TEST_MONGO_URI")
        .expect("ESR_TEST_MONGO_URI is not set: run the tests with scripts/test.sh, which starts the servers");
    ((), Arc::new(MongoStore::open(&database_uri(&base)).await.expect("open the MongoDB store")))
}

store_suite!(wire_server_store, wire_server);

/// `None` (and a note on stderr) when no real MongoDB is configured.
async fn real_mongodb() -> Option<Arc<dyn Store>> {
    let Ok(base) = std::env::var("ESR_TEST_MONGODB_URI") else {
        eprintln!("ESR_TEST_MONGODB_URI is not set: the real-MongoDB run of the store suite is skipped");
        return None;
    };
    Some(Arc::new(MongoStore::open(&database_uri(&base)).await.expect("open the MongoDB store")))
}

macro_rules! real_mongodb_suite {
    ($($check:ident),* $(,)?) => {
        mod real_mongodb {
            use super::*;
            $(
                #[tokio::test]
                async fn $check() {
                    if let Some(store) = real_mongodb().await {
                        conformance::store::$check(store).await;
                    }
                }
            )*
        }
    };
}

real_mongodb_suite!(
    a_retried_commit_counts_once,
    ledger_and_streams_round_trip,
    file_txn_applies_the_version_rule,
    large_files_apply_the_same_version_rule,
    field_names_stay_with_the_values_they_were_stored_with,
    dropped_file_txn_leaves_nothing,
    commit_with_file_is_atomic_and_counted,
    delivered_batches_count_once,
    delivered_batches_obey_the_version_rule,
    delivered_calls_count_as_line_by_line,
    audit_log_keeps_order,
    shared_documents_compare_and_set,
    leases_fence_out_a_former_owner,
    next_seq_never_goes_back,
    files_in_state_match_the_snapshot,
);

/// A store in a database of its own with a raw handle on the same database: the journal
/// tests write journal documents as a stalled writer would have, then open the store again
/// (which replays the journal) and read what it copied out.
struct JournalRig {
    uri: String,
    store: MongoStore,
    db: mongodb::Database,
}

/// The file every journal test writes, in region SEV.
const NAME: &str = "DE_SEV_RMC_20220730_00000001.DAT";

impl JournalRig {
    async fn open() -> Self {
        let base = std::env::var("ESR_TEST_MONGO_URI").expect("ESR_TEST_MONGO_URI is not set: run scripts/test.sh");
        let uri = database_uri(&base);
        let store = MongoStore::open(&uri).await.expect("open");
        let client = mongodb::Client::with_uri_str(&uri).await.expect("a client");
        let db = client.default_database().expect("the test database");
        Self { uri, store, db }
    }

    /// `region/SEV` claimed by `owner`, `after` seconds past a fixed time (for 10 s).
    async fn lease(&self, owner: &str, after: i64) -> esr_ingest::core::lease::Lease {
        let at = chrono::DateTime::from_timestamp(1_659_355_200 + after, 0).unwrap();
        self.store.claim_lease("region/SEV", owner, chrono::TimeDelta::seconds(10), at).await.unwrap().expect("lease")
    }

    /// A commit of [`NAME`] in `state` (with SEV's stream waiting since `waiting_since`)
    /// under `lease`'s token.
    fn fenced(
        lease: &esr_ingest::core::lease::Lease,
        state: esr_ingest::core::ledger::FileState,
        waiting_since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> esr_ingest::ports::store::Commit {
        use esr_ingest::core::sequencer::StreamRecord;
        let stream =
            StreamRecord { region: "SEV".into(), next_seq: Some(1), waiting_since, skipped: Default::default() };
        esr_ingest::ports::store::Commit {
            ledger: vec![conformance::store::entry(NAME, state)],
            streams: vec![stream],
            fence: Some(esr_ingest::core::lease::Fence { lease: "region/SEV".into(), token: lease.token }),
            ..Default::default()
        }
    }

    fn collection(&self, name: &str) -> mongodb::Collection<mongodb::bson::Document> {
        self.db.collection(name)
    }

    /// The stored ledger document of [`NAME`].
    async fn ledger_document(&self) -> mongodb::bson::Document {
        use mongodb::bson::doc;
        self.collection("ledger").find_one(doc! { "_id": NAME }).await.expect("read").expect("the entry")
    }

    /// Opens the store again, which replays the journal: the ledger entry of [`NAME`] and
    /// SEV's stream as they are then.
    async fn reopened(self) -> (esr_ingest::core::ledger::LedgerEntry, esr_ingest::core::sequencer::StreamRecord) {
        drop(self.store);
        let reopened = MongoStore::open(&self.uri).await.expect("open again (replays the journal)");
        let snapshot = reopened.snapshot().await.unwrap();
        let entry = snapshot.ledger.into_iter().find(|e| e.name == NAME).expect("the entry");
        let stream = snapshot.streams.into_iter().find(|s| s.region == "SEV").expect("the stream");
        (entry, stream)
    }
}

/// An owner that recorded a commit under its lease and paused before copying it out (the
/// commit stays in the journal, not done) while its successor wrote the same file's entry:
/// when the late copy-out runs (here: the replay when the store is opened again), the
/// successor's entry stays.
#[tokio::test]
async fn a_former_owners_late_copy_out_cannot_put_back_an_older_ledger_entry() {
    use esr_ingest::core::ledger::FileState;
    use mongodb::bson::{doc, oid::ObjectId};
    let rig = JournalRig::open().await;
    let a = rig.lease("a", 0).await;
    let b = rig.lease("b", 11).await; // a's lease lapsed
    assert!(b.token > a.token);
    rig.store.commit(JournalRig::fenced(&b, FileState::Applied, None)).await.expect("b writes the file applied");

    // a's commit, recorded under its (then valid) token before the takeover, copied late.
    let mut older = rig.ledger_document().await;
    older.insert("state", "pending");
    older.remove("fence_token");
    older.remove("fence_lease");
    let journal = doc! {
        "_id": ObjectId::new(), "done": false, "fence_lease": "region/SEV", "fence_token": a.token as i64,
        "ledger": [older],
        "streams": [], "audit": [], "counters": {},
    };
    rig.collection("journal").insert_one(journal).await.expect("insert");

    let (got, _) = rig.reopened().await;
    assert_eq!(got.state, FileState::Applied, "the former owner's late copy put back an older entry");
}

/// A reader that copies out an owner's commit late (it found the journal document not
/// yet done, then stalled: a scrape's read, another instance's pass) after the same owner,
/// under the same token, wrote a newer entry of the file: the newer entry stays. Put back,
/// the file would count as not yet counted and be applied (and counted) again. The same
/// holds for how long the stream has been waiting (the gap alert's clock).
#[tokio::test]
async fn a_late_copy_of_an_owners_earlier_commit_cannot_put_back_its_older_entry() {
    use esr_ingest::core::ledger::FileState;
    use mongodb::bson::doc;
    let rig = JournalRig::open().await;
    let a = rig.lease("a", 0).await;
    let waiting = chrono::DateTime::from_timestamp(1_659_355_200, 0);
    let (pending, applied) =
        (JournalRig::fenced(&a, FileState::Pending, waiting), JournalRig::fenced(&a, FileState::Applied, None));
    rig.store.commit(pending).await.expect("the file pending, the stream waiting");
    rig.store.commit(applied).await.expect("then applied, same token");

    // The reader's stale view: the first commit's journal document, not yet done.
    let journal = rig.collection("journal");
    let mut first = None;
    let mut cursor = journal.find(doc! {}).sort(doc! { "_id": 1 }).await.expect("read the journal");
    while cursor.advance().await.expect("next") {
        let d = cursor.deserialize_current().expect("a document");
        let pending = d
            .get_array("ledger")
            .ok()
            .and_then(|l| l.first())
            .and_then(|e| e.as_document())
            .is_some_and(|e| e.get_str("_id") == Ok(NAME) && e.get_str("state") == Ok(FileState::Pending.as_str()));
        if pending && first.is_none() {
            first = Some(d.get("_id").cloned().expect("an id"));
        }
    }
    let first = first.expect("the first commit's journal document");
    journal.update_one(doc! { "_id": first }, doc! { "$set": { "done": false } }).await.expect("mark it not done");

    let (got, stream) = rig.reopened().await;
    assert_eq!(got.state, FileState::Applied, "a late copy of the owner's earlier commit put back its older entry");
    assert_eq!(stream.waiting_since, None, "a late copy restarted the clock of a stream no longer waiting");
}

/// Commits of one owner copied out at the same moment (its own copy racing a reader's
/// late copy of another of its commits) on a document's first fenced write: the entry and
/// the stream's waiting clock left are those of the latest commit (the highest order),
/// whichever copy reaches the document first. Each round uses a region (so a lease, a
/// stream and a ledger document) never written before.
#[tokio::test]
async fn racing_copies_of_one_owners_commits_leave_its_latest_on_a_documents_first_write() {
    use esr_ingest::core::ledger::FileState;
    use mongodb::bson::doc;
    const COMMITS: usize = 6;
    let rig = JournalRig::open().await;
    let base = chrono::DateTime::from_timestamp(1_659_355_200, 0).expect("a time");
    let mut wrong = Vec::new();
    for round in 0..40u32 {
        let region = format!("Q{}{}", char::from(b'A' + (round / 26) as u8), char::from(b'A' + (round % 26) as u8));
        let name = format!("DE_{region}_RMC_20220730_00000001.DAT");
        let lease_name = format!("region/{region}");
        let lease = rig
            .store
            .claim_lease(&lease_name, "a", chrono::TimeDelta::seconds(60), base)
            .await
            .expect("claim")
            .expect("a lease");
        let commits = (0..COMMITS).map(|i| {
            let mut entry = conformance::store::entry(&name, FileState::Pending);
            entry.size = i as u64;
            let stream = esr_ingest::core::sequencer::StreamRecord {
                region: region.clone(),
                next_seq: Some(1),
                waiting_since: Some(base + chrono::TimeDelta::seconds(i as i64)),
                skipped: Default::default(),
            };
            let commit = esr_ingest::ports::store::Commit {
                ledger: vec![entry],
                streams: vec![stream],
                fence: Some(esr_ingest::core::lease::Fence { lease: lease_name.clone(), token: lease.token }),
                ..Default::default()
            };
            rig.store.commit(commit)
        });
        for done in futures::future::join_all(commits).await {
            done.expect("a commit");
        }
        // The latest commit: the journal document with the highest order.
        let mut latest: Option<(i64, i64)> = None;
        let mut cursor = rig.collection("journal").find(doc! { "fence_lease": &lease_name }).await.expect("read");
        while cursor.advance().await.expect("next") {
            let d = cursor.deserialize_current().expect("a document");
            let order = d.get_i64("fence_order").expect("an order");
            let size = d
                .get_array("ledger")
                .ok()
                .and_then(|l| l.first())
                .and_then(|e| e.as_document())
                .and_then(|e| e.get("size"))
                .and_then(|s| s.as_i64().or_else(|| s.as_i32().map(i64::from)))
                .expect("the entry's size");
            if latest.is_none_or(|(o, _)| order > o) {
                latest = Some((order, size));
            }
        }
        let (_, size) = latest.expect("the journal documents of the round");
        let snapshot = rig.store.snapshot().await.expect("a snapshot");
        let stored_size = snapshot.ledger.iter().find(|e| e.name == name).map(|e| e.size as i64);
        let waiting = snapshot.streams.iter().find(|s| s.region == region).and_then(|s| s.waiting_since);
        if stored_size != Some(size) || waiting != Some(base + chrono::TimeDelta::seconds(size)) {
            wrong.push(format!(
                "{region}: latest commit {size}, stored entry {stored_size:?}, waiting since {waiting:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "an earlier commit's copy was left over the latest one's: {wrong:#?}");
}

/// A commit retried while a later commit of the same owner wrote the file meanwhile: the
/// retry leaves the later commit's entry. `lost_at_commit_point`: the first attempt failed
/// right after its commit point (recorded under the lease, not yet in the journal; the
/// hook's variable is set, which nextest allows, one test per process, and the hook fires
/// only for this lease); else it succeeded and only its reply was lost.
async fn a_retry_leaves_the_later_commits_entry(lost_at_commit_point: bool) {
    use esr_ingest::core::ledger::FileState;
    if lost_at_commit_point {
        // SAFETY: set before this test starts any task or client; no other thread reads
        // the environment yet (nextest: one test per process).
        unsafe { std::env::set_var("ESR_INGEST_FAULT", "mongo-fail-after-pending:region/SEV") };
    }
    let rig = JournalRig::open().await;
    let a = rig.lease("a", 0).await;
    let first = esr_ingest::ports::store::Commit {
        id: Some(esr_ingest::ports::store::new_commit_id()),
        ..JournalRig::fenced(&a, FileState::Pending, None)
    };
    let attempt = rig.store.commit(first.clone()).await;
    assert_eq!(attempt.is_err(), lost_at_commit_point, "the first attempt: {attempt:?}");
    rig.store.commit(JournalRig::fenced(&a, FileState::Applied, None)).await.expect("a later commit");
    rig.store.commit(first).await.expect("the first commit retried");
    let (got, _) = rig.reopened().await;
    assert_eq!(got.state, FileState::Applied, "the retry of the earlier commit put back its entry");
}

/// The first attempt succeeded: the retry copies out the commit as the journal recorded
/// it, not rebuilt with a later order.
#[tokio::test]
async fn a_retried_commit_does_not_put_back_its_entry_over_a_later_commit() {
    a_retry_leaves_the_later_commits_entry(false).await;
}

/// The first attempt's reply was lost at its commit point: the retry is stamped as the
/// first attempt was.
#[tokio::test]
async fn a_commit_retried_after_its_reply_was_lost_at_the_commit_point_keeps_its_first_order() {
    a_retry_leaves_the_later_commits_entry(true).await;
}

/// A region whose name has a dot (a custom `name_pattern` allows it): its lease fences
/// the ledger entry and the stream like any other, commit after commit, and a late copy
/// of an earlier commit is refused.
#[tokio::test]
async fn a_lease_name_with_a_dot_fences_its_documents_like_any_other() {
    use esr_ingest::core::ledger::FileState;
    use esr_ingest::core::sequencer::StreamRecord;
    use mongodb::bson::doc;
    let rig = JournalRig::open().await;
    let (region, lease_name, name) = ("A.B", "region/A.B", "DE_SEV_RMC_20220730_00000001.DAT");
    let at = chrono::DateTime::from_timestamp(1_659_355_200, 0).expect("a time");
    let lease = rig
        .store
        .claim_lease(lease_name, "a", chrono::TimeDelta::seconds(60), at)
        .await
        .expect("claim")
        .expect("a lease");
    let commit = |state: FileState, waiting: Option<chrono::DateTime<chrono::Utc>>| esr_ingest::ports::store::Commit {
        ledger: vec![conformance::store::entry(name, state)],
        streams: vec![StreamRecord {
            region: region.into(),
            next_seq: Some(1),
            waiting_since: waiting,
            skipped: Default::default(),
        }],
        fence: Some(esr_ingest::core::lease::Fence { lease: lease_name.into(), token: lease.token }),
        ..Default::default()
    };
    for (state, waiting) in
        [(FileState::Pending, Some(at)), (FileState::Delivered, Some(at)), (FileState::Applied, None)]
    {
        tokio::time::timeout(std::time::Duration::from_secs(30), rig.store.commit(commit(state, waiting)))
            .await
            .expect("a commit in time")
            .expect("a commit");
    }
    let journal = rig.collection("journal");
    let first =
        journal.find_one(doc! { "ledger.state": FileState::Pending.as_str() }).await.expect("read").expect("the first");
    journal
        .update_one(doc! { "_id": first.get("_id").cloned() }, doc! { "$set": { "done": false } })
        .await
        .expect("not done");
    let reopened = MongoStore::open(&rig.uri).await.expect("open again (replays the journal)");
    let snapshot = reopened.snapshot().await.expect("a snapshot");
    let entry = snapshot.ledger.iter().find(|e| e.name == name).expect("the entry");
    let stream = snapshot.streams.iter().find(|s| s.region == region).expect("the stream");
    assert_eq!(
        (entry.state, stream.waiting_since),
        (FileState::Applied, None),
        "a late copy won, or a commit was lost"
    );
}

/// Journal documents written before commits carried an order (a rolling upgrade replays
/// them), under a token newer than an ordered commit's, copy out in turn: the first does
/// not leave the older token's order behind to refuse the second.
#[tokio::test]
async fn journal_documents_without_an_order_copy_out_in_turn_over_an_ordered_entry() {
    use esr_ingest::core::ledger::FileState;
    use mongodb::bson::{doc, oid::ObjectId};
    let rig = JournalRig::open().await;
    let a = rig.lease("a", 0).await;
    rig.store.commit(JournalRig::fenced(&a, FileState::Pending, None)).await.expect("an ordered commit");

    let stored = rig.ledger_document().await;
    let unordered = |state: FileState| {
        let mut entry = stored.clone();
        for field in ["fences", "orders"] {
            entry.remove(field);
        }
        entry.insert("state", state.as_str());
        doc! {
            "_id": ObjectId::new(), "done": false, "fence_lease": "region/SEV", "fence_token": a.token as i64 + 1,
            "ledger": [entry], "streams": [], "audit": [], "counters": {},
        }
    };
    let journal = rig.collection("journal");
    journal.insert_one(unordered(FileState::Delivered)).await.expect("insert");
    journal.insert_one(unordered(FileState::Applied)).await.expect("insert");

    let (got, _) = rig.reopened().await;
    assert_eq!(got.state, FileState::Applied, "the second unordered copy was refused");
}

/// The journal is folded into the counter roll-up and deleted; the counters do not
/// change, later commits add to them, a retried commit whose journal document was folded
/// away counts nothing again, and documents from before keys existed keep their counts.
#[tokio::test]
async fn folding_the_journal_keeps_every_count_once() {
    use esr_ingest::ports::store::{Commit, CounterDelta};
    let base = std::env::var("ESR_TEST_MONGO_URI").expect("ESR_TEST_MONGO_URI is not set: run scripts/test.sh");
    let uri = database_uri(&base);
    let store = MongoStore::open(&uri).await.expect("open");
    let delta = |n: u64| Commit {
        counters: CounterDelta { applied_files: 1, duplicate_files: n, ..Default::default() },
        id: Some(esr_ingest::ports::store::new_commit_id()),
        ..Default::default()
    };
    let first: Vec<Commit> = (1..=30).map(delta).collect();
    for c in &first {
        store.commit(c.clone()).await.unwrap();
    }
    let before = store.counts().await.unwrap();
    assert_eq!((before.applied_files, before.duplicate_files), (30, 465));
    assert_eq!(store.fold_journal(chrono::Utc::now()).await.unwrap(), 0, "nothing is a week old yet");
    let later = chrono::Utc::now() + chrono::Duration::days(8);
    // A fold deletes only what the fold before it covered: a reader may still sum after
    // the roll-up it read.
    assert_eq!(store.fold_journal(later).await.unwrap(), 0, "folded, nothing deleted yet");
    assert_eq!(store.counts().await.unwrap(), before, "folding changes no count");
    assert_eq!(store.fold_journal(later).await.unwrap(), 30, "the next fold deletes what the first covered");
    assert_eq!(store.counts().await.unwrap(), before, "deleting changes no count");
    let client = mongodb::Client::with_uri_str(&uri).await.expect("a client");
    let journal =
        client.default_database().expect("the test database").collection::<mongodb::bson::Document>("journal");
    assert_eq!(journal.count_documents(mongodb::bson::doc! {}).await.unwrap(), 0, "the journal is empty");
    // A retry of a folded commit (its reply was lost) counts nothing; new commits count.
    store.commit(first[0].clone()).await.unwrap();
    store.commit(delta(100)).await.unwrap();
    let after = store.counts().await.unwrap();
    assert_eq!((after.applied_files, after.duplicate_files), (31, 565));
    store.fold_journal(later).await.unwrap();
    assert_eq!(store.counts().await.unwrap(), after);
    store.fold_journal(later).await.unwrap();
    assert_eq!(store.counts().await.unwrap(), after);
    assert_eq!(journal.count_documents(mongodb::bson::doc! {}).await.unwrap(), 0, "folded and deleted");
    // A journal written before keys existed (an upgrade): its documents are keyed in id
    // order, and no fold passes one still without a key, so none of their counts is lost.
    let upgraded_uri = database_uri(&base);
    let upgraded = MongoStore::open(&upgraded_uri).await.expect("open");
    let old_journal = client
        .database(upgraded_uri.rsplit('/').next().expect("a database name"))
        .collection::<mongodb::bson::Document>("journal");
    // More than one fold keys (1,000 at a time), inserted in the reverse of id order.
    let old: Vec<mongodb::bson::Document> = (0..1003u32)
        .map(|i| {
            let mut bytes = [0u8; 12];
            bytes[..4].copy_from_slice(&1_600_000_000u32.to_be_bytes());
            bytes[8..].copy_from_slice(&(5000 - i).to_be_bytes());
            mongodb::bson::doc! {
                "_id": mongodb::bson::oid::ObjectId::from_bytes(bytes), "done": true,
                "ledger": [], "streams": [], "audit": [], "counters": { "applied_files": 1_i64 },
            }
        })
        .collect();
    old_journal.insert_many(old).await.unwrap();
    upgraded.commit(delta(1)).await.unwrap();
    assert_eq!(upgraded.counts().await.unwrap().applied_files, 1004, "unkeyed documents count");
    for _ in 0..3 {
        upgraded.fold_journal(later).await.unwrap();
        assert_eq!(upgraded.counts().await.unwrap().applied_files, 1004);
    }
    assert_eq!(old_journal.count_documents(mongodb::bson::doc! {}).await.unwrap(), 0, "folded and deleted");
    // Another instance opening the same database sees the same counts.
    let other = MongoStore::open(&uri).await.expect("open again");
    assert_eq!(other.counts().await.unwrap(), after);
}
