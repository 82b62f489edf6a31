//! The store conformance suite: every `Store` implementation must pass all of it.
//! `store_suite!(name, factory)` expands to one test per check.

use chrono::{NaiveDate, TimeZone, Utc};
use esr_ingest::core::full::{FullFile, FullFileMode, Sweep, Swept};
use esr_ingest::core::ledger::{Conflict, FileState, LedgerEntry};
use esr_ingest::core::name::{NameProfile, NameVerdict};
use esr_ingest::core::record::{Fields, Record, Reject, Tally};
use esr_ingest::core::sequencer::StreamRecord;
use esr_ingest::core::version::Version;
use esr_ingest::ports::store::{AuditEntry, Commit, CounterDelta, DeadLetter, DeliveredBatch, FileTicket, Store};
use std::sync::Arc;

fn ticket(name: &str) -> FileTicket {
    let NameVerdict::Batch(file) = NameProfile::default().classify(name) else { panic!("{name}") };
    FileTicket { file, key: name.into(), reapply: false, record_lines: 3, generation: 1, together: false }
}

/// A ticket declaring many lines, so stores with a bulk path for large files take it.
fn large(mut t: FileTicket) -> FileTicket {
    t.record_lines = 10_000_000;
    t
}

fn record(rtype: &str, key: &str, day: u32, seq: u64, line: u64, deleted: bool, title: &str) -> Record {
    Record {
        record_type: rtype.into(),
        key: key.into(),
        deleted,
        version: Version { date: NaiveDate::from_ymd_opt(2022, 7, day).unwrap(), seq, line },
        region: "SEV".into(),
        file: format!("DE_SEV_RMC_202207{day:02}_{seq:08}.DAT").into(),
        fields: (!deleted).then(|| Fields::new(vec![Arc::from("position_title")].into(), [title])),
    }
}

pub fn entry(name: &str, state: FileState) -> LedgerEntry {
    let batch = match NameProfile::default().classify(name) {
        NameVerdict::Batch(b) => Some(b),
        _ => None,
    };
    let t = Utc.with_ymd_and_hms(2022, 8, 1, 16, 11, 0).unwrap();
    LedgerEntry {
        name: name.into(),
        key: format!("in/{name}"),
        batch,
        size: 123,
        fingerprint: "fp-1".into(),
        sha256: Some("ab".repeat(32)),
        state,
        reason: None,
        conflict: None,
        first_seen: t,
        updated_at: t,
        record_lines: 7,
        tally: Tally { applied: 4, stale: 1, unchanged: 1, rejected: 1, dead_lettered: 0, removed: 2, ignored: 1 },
        generation: 2,
        counted: false,
    }
}

/// Settles a file's unit of work and commits `ledger` with its tally, as the engine does:
/// the tally in the entries, the records in the counters. Returns the tally.
async fn settle_and_commit(mut txn: Box<dyn esr_ingest::ports::store::FileTxn>, ledger: Vec<LedgerEntry>) -> Tally {
    let t = txn.settle().await.unwrap();
    let ledger = ledger.into_iter().map(|e| LedgerEntry { tally: t, ..e }).collect();
    let counters = CounterDelta { records: t, ..Default::default() };
    txn.commit(Commit { ledger, counters, ..Default::default() }).await.unwrap();
    t
}

pub async fn ledger_and_streams_round_trip(store: Arc<dyn Store>) {
    let mut conflicted = entry("DE_SEV_RMC_20220730_00001157.DAT", FileState::Applied);
    conflicted.counted = true;
    conflicted.conflict = Some(Conflict {
        fingerprint: "fp-2".into(),
        sha256: "cd".repeat(32),
        reason: "conflict: differs".into(),
        at: Utc.with_ymd_and_hms(2022, 8, 2, 9, 0, 0).unwrap(),
    });
    let mut bad = entry("notes.txt", FileState::Quarantined);
    bad.reason = Some("bad name: does not match".into());
    bad.sha256 = None;
    let stream = StreamRecord {
        region: "SEV".into(),
        next_seq: Some(1158),
        waiting_since: Some(Utc.with_ymd_and_hms(2022, 8, 1, 16, 11, 0).unwrap()),
        skipped: [1150, 1152].into(),
    };
    store
        .commit(Commit {
            ledger: vec![conflicted.clone(), bad.clone()],
            streams: vec![stream.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    let snap = store.snapshot().await.unwrap();
    let mut ledger = snap.ledger.clone();
    ledger.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(ledger, vec![conflicted.clone(), bad]);
    assert_eq!(snap.streams, vec![stream]);
    // replacing an entry keeps one row per name
    let mut later = conflicted;
    later.conflict = None;
    later.fingerprint = "fp-3".into();
    store.commit(Commit { ledger: vec![later.clone()], ..Default::default() }).await.unwrap();
    let snap = store.snapshot().await.unwrap();
    assert_eq!(snap.ledger.iter().filter(|e| e.name == later.name).collect::<Vec<_>>(), vec![&later]);
}

pub async fn file_txn_applies_the_version_rule(store: Arc<dyn Store>) {
    version_rule_with(store, |t| t).await;
}

pub async fn large_files_apply_the_same_version_rule(store: Arc<dyn Store>) {
    version_rule_with(store, large).await;
}

async fn version_rule_with(store: Arc<dyn Store>, size: fn(FileTicket) -> FileTicket) {
    let newer = "DE_SEV_RMC_20220731_00000002.DAT";
    let mut txn = store.begin_file(size(ticket(newer))).await.unwrap();
    txn.apply(vec![record("POS", "1", 31, 2, 2, false, "new"), record("POR", "9", 31, 2, 3, true, "")]).await.unwrap();
    let t = settle_and_commit(txn, vec![entry(newer, FileState::Applied)]).await;
    assert_eq!(t, Tally { applied: 2, ..Default::default() });
    let snap = store.snapshot().await.unwrap();
    assert_eq!(snap.ledger[0].tally, t, "the tally is recorded in the file's ledger entry");
    let mut txn = store.begin_file(size(ticket("DE_SEV_RMC_20220730_00000001.DAT"))).await.unwrap();
    txn.apply(vec![
        record("POS", "2", 30, 1, 5, false, "fresh, then newer"), // applied, then line 6 wins
        record("POS", "1", 30, 1, 2, false, "older"),             // stale
    ])
    .await
    .unwrap();
    txn.apply(vec![
        record("POR", "9", 30, 1, 3, false, "revive"), // stale: the tombstone is newer
        record("POS", "2", 30, 1, 6, false, "newest"), // applied over line 5
    ])
    .await
    .unwrap();
    let t = settle_and_commit(txn, Vec::new()).await;
    assert_eq!(t, Tally { applied: 2, stale: 2, ..Default::default() });
    // the same file again: its lines are found unchanged
    let mut again = size(ticket(newer));
    again.reapply = true;
    let mut txn = store.begin_file(again).await.unwrap();
    txn.apply(vec![record("POS", "1", 31, 2, 2, false, "new"), record("POR", "9", 31, 2, 3, true, "")]).await.unwrap();
    let t = settle_and_commit(txn, Vec::new()).await;
    assert_eq!(t, Tally { unchanged: 2, ..Default::default() });
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.records_applied, counts.records_stale, counts.records_unchanged), (4, 2, 2));
    let lines = crate::common::engine::export_lines(store.as_ref()).await;
    let v: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(v.len(), 3);
    assert_eq!(
        (v[0]["type"].as_str(), v[0]["key"].as_str(), v[0]["deleted"].as_bool()),
        (Some("POR"), Some("9"), Some(true))
    );
    assert!(v[0].get("fields").is_none());
    assert_eq!(v[1]["fields"]["position_title"], "new");
    assert_eq!(v[1]["version"], serde_json::json!({"date": "2022-07-31", "seq": 2, "line": 2}));
    assert_eq!(v[2]["fields"]["position_title"], "newest");
    assert_eq!(v[2]["version"]["line"], 6);
}

pub async fn field_names_stay_with_the_values_they_were_stored_with(store: Arc<dyn Store>) {
    let with = |names: &[&str], values: &[&str], key: &str, line: u64| {
        let mut r = record("POS", key, 30, 1, line, false, "");
        let names: Vec<Arc<str>> = names.iter().map(|n| Arc::from(*n)).collect();
        r.fields = Some(Fields::new(names.into(), values.iter().copied()));
        r
    };
    // first attempt rolled back: whatever it wrote about field names must not linger
    let mut txn = store.begin_file(ticket("DE_SEV_RMC_20220730_00000001.DAT")).await.unwrap();
    txn.apply(vec![with(&["a", "b"], &["1", "2"], "1", 2)]).await.unwrap();
    drop(txn);
    let mut txn = store.begin_file(ticket("DE_SEV_RMC_20220730_00000001.DAT")).await.unwrap();
    txn.apply(vec![with(&["a", "b"], &["1", "2"], "1", 2), with(&["a", "b", "c"], &["x", "y", "z"], "2", 3)])
        .await
        .unwrap();
    txn.commit(Commit::default()).await.unwrap(); // settles first
    let lines = crate::common::engine::export_lines(store.as_ref()).await;
    let v: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(v[0]["fields"], serde_json::json!({"a": "1", "b": "2"}));
    assert_eq!(v[1]["fields"], serde_json::json!({"a": "x", "b": "y", "c": "z"}));
    assert!(lines[1].contains(r#""fields":{"a":"x","b":"y","c":"z"}"#), "layout order kept: {}", lines[1]);
}

pub async fn dropped_file_txn_leaves_nothing(store: Arc<dyn Store>) {
    let mut txn = store.begin_file(ticket("DE_SEV_RMC_20220730_00000001.DAT")).await.unwrap();
    txn.apply(vec![record("POS", "1", 30, 1, 2, false, "x")]).await.unwrap();
    txn.reject(vec![Reject {
        file: "DE_SEV_RMC_20220730_00000001.DAT".into(),
        line: 3,
        reason: "r".into(),
        raw: "x".into(),
    }])
    .await
    .unwrap();
    drop(txn);
    // the store stays usable; the dropped unit left no ledger entry and no counts
    store
        .commit(Commit { counters: CounterDelta { duplicate_files: 1, ..Default::default() }, ..Default::default() })
        .await
        .unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.duplicate_files, counts.applied_files, counts.records_applied), (1, 0, 0));
    assert!(store.snapshot().await.unwrap().ledger.is_empty());
    let exported = crate::common::engine::export_lines(store.as_ref()).await;
    if store.atomic_files() {
        assert!(exported.is_empty());
        assert!(store.rejects(None).await.unwrap().is_empty());
    } else {
        // idempotent steps: what was written obeys the version rule and is written again
        // unchanged when the file is processed again
        assert_eq!(exported.len(), 1);
        let mut again = store.begin_file(ticket("DE_SEV_RMC_20220730_00000001.DAT")).await.unwrap();
        again.apply(vec![record("POS", "1", 30, 1, 2, false, "x")]).await.unwrap();
        let t = settle_and_commit(again, Vec::new()).await;
        assert_eq!(t, Tally { unchanged: 1, ..Default::default() });
    }
}

fn one(
    r: Result<Vec<Option<Tally>>, esr_ingest::ports::store::StoreError>,
) -> Result<Option<Tally>, esr_ingest::ports::store::StoreError> {
    r.map(|mut v| v.pop().flatten())
}

fn delivered(receipt: &str, generation: u32, records: Vec<Record>) -> DeliveredBatch {
    DeliveredBatch { receipt: receipt.into(), file: "DE_SEV_RMC_20220730_00000001.DAT".into(), generation, records }
}

pub async fn delivered_batches_count_once(store: Arc<dyn Store>) {
    let file = "DE_SEV_RMC_20220730_00000001.DAT";
    let a = vec![record("POS", "1", 30, 1, 2, false, "x"), record("POS", "2", 30, 1, 3, false, "y")];
    let t = one(store.apply_delivered(vec![delivered("f/1/2", 1, a.clone())]).await).unwrap();
    assert_eq!(t, Some(Tally { applied: 2, ..Default::default() }));
    // redelivered: nothing applied, nothing counted
    assert_eq!(one(store.apply_delivered(vec![delivered("f/1/2", 1, a.clone())]).await).unwrap(), None);
    // a poison line is marked, then applied by a replay that clears the mark
    let dead = DeadLetter { file: file.into(), generation: 1, line: 4, reason: "refused".into() };
    store.mark_dead_lettered(vec![dead.clone(), dead]).await.unwrap();
    let p = store.delivery_progress(file, 1).await.unwrap();
    assert_eq!(p, Tally { applied: 2, dead_lettered: 1, ..Default::default() });
    let replayed =
        one(store.apply_delivered(vec![delivered("f/1/4", 1, vec![record("POS", "3", 30, 1, 4, false, "z")])]).await);
    assert_eq!(replayed.unwrap(), Some(Tally { applied: 1, ..Default::default() }));
    assert_eq!(store.delivery_progress(file, 1).await.unwrap(), Tally { applied: 3, ..Default::default() });
    // a second generation (a backfill) counts on its own: the same lines are unchanged
    let t = one(store.apply_delivered(vec![delivered("f/2/2", 2, a)]).await).unwrap();
    assert_eq!(t, Some(Tally { unchanged: 2, ..Default::default() }));
    assert_eq!(store.delivery_progress(file, 2).await.unwrap(), Tally { unchanged: 2, ..Default::default() });
    assert_eq!(store.delivery_progress("other", 1).await.unwrap(), Tally::default());
    assert_eq!(crate::common::engine::export_lines(store.as_ref()).await.len(), 3);
    // several messages in one call: one entry each, in order
    let both = store
        .apply_delivered(vec![
            delivered("f/1/2", 1, vec![record("POS", "1", 30, 1, 2, false, "x")]),
            delivered("f/1/7", 1, vec![record("POS", "4", 30, 1, 7, false, "w")]),
        ])
        .await
        .unwrap();
    assert_eq!(both, vec![None, Some(Tally { applied: 1, ..Default::default() })]);
    assert_eq!(crate::common::engine::export_lines(store.as_ref()).await.len(), 4);
}

pub async fn delivered_batches_obey_the_version_rule(store: Arc<dyn Store>) {
    let newer = vec![record("POS", "1", 31, 2, 5, true, "")];
    one(store.apply_delivered(vec![delivered("n/1/5", 1, newer)]).await).unwrap();
    let older = vec![record("POS", "1", 30, 1, 9, false, "old"), record("POS", "1", 31, 2, 5, true, "")];
    let t = one(store.apply_delivered(vec![delivered("o/1/9", 1, older)]).await).unwrap();
    assert_eq!(t, Some(Tally { stale: 1, unchanged: 1, ..Default::default() }));
    let lines = crate::common::engine::export_lines(store.as_ref()).await;
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains(r#""deleted":true"#), "{}", lines[0]);
}

/// Random calls of broker messages, with lines of one identity in the same and in
/// different messages, equal versions, tombstones and redelivered messages: every
/// message's tally, and the records left, are what applying each call's new messages line
/// by line in identity-then-version order gives (`ports::store::in_identity_order`).
pub async fn delivered_calls_count_as_line_by_line(store: Arc<dyn Store>) {
    use std::collections::{HashMap, HashSet};
    let mut seed: u64 = 0x5eed;
    let mut draw = |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let (mut sent, mut seen): (Vec<DeliveredBatch>, HashSet<String>) = (Vec::new(), HashSet::new());
    let mut stored: HashMap<String, (Version, bool)> = HashMap::new();
    for round in 0..60 {
        let mut call = Vec::new();
        for _ in 0..=draw(4) {
            if !sent.is_empty() && draw(10) < 3 {
                call.push(sent[draw(sent.len() as u64) as usize].clone()); // redelivered
                continue;
            }
            // earlier lines of this call, which a new message may carry again (the same
            // line under another receipt: equal versions inside one call)
            let earlier: Vec<Record> = call.iter().flat_map(|m: &DeliveredBatch| m.records.clone()).collect();
            let records = (0..=draw(4))
                .map(|_| {
                    if !earlier.is_empty() && draw(4) == 0 {
                        return earlier[draw(earlier.len() as u64) as usize].clone();
                    }
                    let (day, seq, line) = (28 + draw(4) as u32, 1 + draw(3), 1 + draw(4));
                    let key = format!("K{}", draw(5));
                    record("POS", &key, day, seq, line, draw(5) == 0, &format!("t{day}.{seq}.{line}"))
                })
                .collect();
            let message = delivered(&format!("r{round}/{}", call.len()), 1, records);
            sent.push(message.clone());
            call.push(message);
        }
        // the model: new messages only (a receipt counts once, in the store or earlier in
        // the call), their lines in identity-then-version order
        let fresh: Vec<bool> = call.iter().map(|m| seen.insert(m.receipt.clone())).collect();
        let mut want: Vec<Option<Tally>> = fresh.iter().map(|f| f.then(Tally::default)).collect();
        for (i, r) in esr_ingest::ports::store::in_identity_order(&call, &fresh) {
            let tally = want[i].as_mut().unwrap();
            match stored.get(&r.key) {
                Some((v, _)) if *v > r.version => tally.stale += 1,
                Some((v, _)) if *v == r.version => tally.unchanged += 1,
                _ => {
                    tally.applied += 1;
                    stored.insert(r.key.clone(), (r.version, r.deleted));
                }
            }
        }
        let got = store.apply_delivered(call.clone()).await.unwrap();
        assert_eq!(got, want, "round {round}: {call:?}");
    }
    // the values left are the newest applied line's (titles follow the version)
    for line in crate::common::engine::export_lines(store.as_ref()).await {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["deleted"] == false {
            let version = &v["version"];
            let date = NaiveDate::parse_from_str(version["date"].as_str().unwrap(), "%Y-%m-%d").unwrap();
            let title = format!("t{}.{}.{}", chrono::Datelike::day(&date), version["seq"], version["line"]);
            assert!(line.contains(&title), "{line} should hold {title}");
        }
    }
    let mut want: Vec<_> = stored
        .into_iter()
        .map(|(key, (v, deleted))| {
            use chrono::Datelike;
            let file = format!("DE_SEV_RMC_202207{:02}_{:08}.DAT", v.date.day(), v.seq);
            (format!("POS/{key}"), deleted, file, (v.date.day(), v.seq, v.line))
        })
        .collect();
    want.sort();
    let mut got = shown(store.as_ref()).await;
    got.sort();
    assert_eq!(got, want);
}

pub async fn commit_with_file_is_atomic_and_counted(store: Arc<dyn Store>) {
    let name = "DE_SEV_RMC_20220730_00000001.DAT";
    let mut txn = store.begin_file(ticket(name)).await.unwrap();
    txn.apply(vec![record("POS", "1", 30, 1, 2, false, "x")]).await.unwrap();
    txn.reject(vec![Reject { file: name.into(), line: 3, reason: "unknown record type".into(), raw: "XYZ".into() }])
        .await
        .unwrap();
    let tally = txn.settle().await.unwrap();
    assert_eq!(tally, Tally { applied: 1, rejected: 1, ..Default::default() });
    // the store writes the commit as handed: this entry's tally is not the file's
    let handed = entry(name, FileState::Applied);
    let commit = Commit {
        ledger: vec![handed.clone()],
        streams: vec![StreamRecord { region: "SEV".into(), next_seq: Some(2), ..Default::default() }],
        counters: CounterDelta {
            applied_files: 1,
            records: Tally { applied: 1, ..Default::default() },
            ..Default::default()
        },
        ..Default::default()
    };
    txn.commit(commit).await.unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.applied_files, counts.records_applied, counts.records_rejected), (1, 1, 1));
    let snap = store.snapshot().await.unwrap();
    assert_eq!(snap.ledger, vec![handed], "written exactly as handed");
    assert_eq!(snap.streams[0].next_seq, Some(2));
    let rejects = store.rejects(Some(name.into())).await.unwrap();
    assert_eq!((rejects.len(), rejects[0].line), (1, 3));
    assert!(store.rejects(Some("other".into())).await.unwrap().is_empty());
}

pub async fn audit_log_keeps_order(store: Arc<dyn Store>) {
    let a = |seq, detail: &str| AuditEntry {
        at: Utc.with_ymd_and_hms(2022, 8, 1, 10, 0, 0).unwrap(),
        actor: "ops".into(),
        action: "sequence skip".into(),
        region: Some("SEV".into()),
        seq: Some(seq),
        detail: detail.into(),
    };
    store.commit(Commit { audit: vec![a(5, "lost upstream")], ..Default::default() }).await.unwrap();
    store.commit(Commit { audit: vec![a(6, "second")], ..Default::default() }).await.unwrap();
    assert_eq!(store.audit_log().await.unwrap(), vec![a(5, "lost upstream"), a(6, "second")]);
    store.ping().await.unwrap();
}

/// `files_in_state` shows exactly the snapshot's entries in that state.
pub async fn files_in_state_match_the_snapshot(store: Arc<dyn Store>) {
    let names =
        ["DE_SEV_RMC_20220730_00000001.DAT", "DE_SEV_RMC_20220731_00000002.DAT", "DE_WES_RMC_20220730_00000001.DAT"];
    let states = [FileState::Delivered, FileState::Applied, FileState::Delivered];
    let ledger = names.iter().zip(states).map(|(n, s)| entry(n, s)).collect();
    store.commit(Commit { ledger, ..Default::default() }).await.unwrap();
    let snapshot = store.snapshot().await.unwrap();
    for state in [FileState::Delivered, FileState::Applied, FileState::Pending] {
        let expected: Vec<_> = snapshot.ledger.iter().filter(|e| e.state == state).cloned().collect();
        assert_eq!(store.files_in_state(state).await.unwrap(), expected, "{state:?}");
    }
    assert_eq!(store.files_in_state(FileState::Delivered).await.unwrap().len(), 2);
}

/// A stream's `next_seq` never goes back, even when a writer with an older view of the
/// stream commits after a newer one (an operator's skip racing a pass); skips add up.
pub async fn next_seq_never_goes_back(store: Arc<dyn Store>) {
    let stream = |next: Option<u64>, skipped: Vec<u64>| Commit {
        streams: vec![StreamRecord {
            region: "SEV".into(),
            next_seq: next,
            skipped: skipped.into_iter().collect(),
            ..Default::default()
        }],
        ..Default::default()
    };
    store.commit(stream(None, vec![])).await.unwrap();
    store.commit(stream(Some(5), vec![4])).await.unwrap();
    store.commit(stream(Some(3), vec![2])).await.unwrap();
    store.commit(stream(None, vec![])).await.unwrap();
    let s = &store.snapshot().await.unwrap().streams[0];
    assert_eq!(s.next_seq, Some(5));
    let mut skipped: Vec<u64> = s.skipped.iter().copied().collect();
    skipped.sort_unstable();
    assert_eq!(skipped, vec![2, 4]);
}

/// Shared documents change only by compare-and-set: a stale version writes nothing, and
/// concurrent read-modify-write loops lose no increment.
pub async fn shared_documents_compare_and_set(store: Arc<dyn Store>) {
    assert_eq!(store.read_shared("alerts").await.unwrap(), None);
    assert_eq!(store.write_shared("alerts", None, "a".into()).await.unwrap(), Some(1));
    assert_eq!(store.write_shared("alerts", None, "b".into()).await.unwrap(), None, "exists already");
    assert_eq!(store.write_shared("alerts", Some(1), "c".into()).await.unwrap(), Some(2));
    assert_eq!(store.write_shared("alerts", Some(1), "d".into()).await.unwrap(), None, "stale version");
    let now = store.read_shared("alerts").await.unwrap().unwrap();
    assert_eq!((now.version, now.value.as_str()), (2, "c"));

    let workers = (0..4).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..10 {
                loop {
                    let current = store.read_shared("counter").await.unwrap();
                    let (expected, n) = match &current {
                        Some(s) => (Some(s.version), s.value.parse::<u64>().unwrap()),
                        None => (None, 0),
                    };
                    if store.write_shared("counter", expected, (n + 1).to_string()).await.unwrap().is_some() {
                        break;
                    }
                }
            }
        })
    });
    for w in workers.collect::<Vec<_>>() {
        w.await.unwrap();
    }
    assert_eq!(store.read_shared("counter").await.unwrap().unwrap().value, "40");
}

/// Leases: one owner at a time, the token grows on every change of hands, and a commit
/// fenced with a superseded token writes nothing — whether plain or with a file's records.
pub async fn leases_fence_out_a_former_owner(store: Arc<dyn Store>) {
    use esr_ingest::core::lease::Fence;
    use esr_ingest::ports::store::StoreError;
    let t0 = Utc.with_ymd_and_hms(2022, 8, 1, 12, 0, 0).unwrap();
    let ttl = chrono::TimeDelta::seconds(10);
    let at = |s: i64| t0 + chrono::TimeDelta::seconds(s);
    let a = store.claim_lease("region/SEV", "a", ttl, at(0)).await.unwrap().expect("free: taken");
    assert_eq!(a.token, 1);
    assert_eq!(store.claim_lease("region/SEV", "b", ttl, at(5)).await.unwrap(), None, "held by a");
    let renewed = store.claim_lease("region/SEV", "a", ttl, at(5)).await.unwrap().unwrap();
    assert_eq!((renewed.token, renewed.expires_at), (1, at(15)));
    let commit = |seq: u64, token: u64| Commit {
        streams: vec![StreamRecord { region: "SEV".into(), next_seq: Some(seq), ..Default::default() }],
        fence: Some(Fence { lease: "region/SEV".into(), token }),
        ..Default::default()
    };
    store.commit(commit(2, 1)).await.expect("a writes while it holds the lease");

    // a pauses past its lease; b takes over
    let b = store.claim_lease("region/SEV", "b", ttl, at(16)).await.unwrap().expect("lapsed: taken");
    assert_eq!((b.token, b.owner.as_str()), (2, "b"));
    assert_eq!(store.claim_lease("region/SEV", "a", ttl, at(17)).await.unwrap(), None);
    let refused = store.commit(commit(99, 1)).await.unwrap_err();
    assert!(matches!(refused, StoreError::Fenced(_)), "{refused}");
    let name = "DE_SEV_RMC_20220730_00000001.DAT";
    let mut txn = store.begin_file(ticket(name)).await.unwrap();
    txn.apply(vec![record("POS", "1", 30, 1, 2, false, "x")]).await.unwrap();
    let mut file_commit = commit(99, 1);
    file_commit.ledger = vec![entry(name, FileState::Applied)];
    file_commit.counters.applied_files = 1;
    txn.settle().await.unwrap();
    let refused = txn.commit(file_commit).await.unwrap_err();
    assert!(matches!(refused, StoreError::Fenced(_)), "{refused}");
    let snap = store.snapshot().await.unwrap();
    assert_eq!(snap.streams[0].next_seq, Some(2), "nothing of a's late writes landed");
    assert!(snap.ledger.is_empty());
    assert_eq!(store.counts().await.unwrap().applied_files, 0);
    store.commit(commit(3, 2)).await.expect("b writes");

    // b lets go: a takes it at once, with the next token
    store.release_lease("region/SEV", "b", at(18)).await.unwrap();
    let again = store.claim_lease("region/SEV", "a", ttl, at(18)).await.unwrap().expect("released: taken");
    assert_eq!(again.token, 3);
    let all = store.leases().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].owner.as_str(), all[0].token), ("a", 3));
    assert_eq!(store.snapshot().await.unwrap().streams[0].next_seq, Some(3));
}

/// A commit retried after its first attempt took effect (the reply was lost) is written
/// once: counters, audit entries and ledger count it once, fenced or not.
pub async fn a_retried_commit_counts_once(store: Arc<dyn Store>) {
    use esr_ingest::core::lease::Fence;
    let t0 = Utc.with_ymd_and_hms(2022, 8, 1, 12, 0, 0).unwrap();
    let lease = store.claim_lease("region/SEV", "a", chrono::TimeDelta::seconds(60), t0).await.unwrap().unwrap();
    let audit = AuditEntry {
        at: t0,
        actor: "ops".into(),
        action: "sequence skip".into(),
        region: Some("SEV".into()),
        seq: Some(4),
        detail: "twice?".into(),
    };
    for fence in [None, Some(Fence { lease: "region/SEV".into(), token: lease.token })] {
        let commit = Commit {
            ledger: vec![entry("DE_SEV_RMC_20220730_00000001.DAT", FileState::Skipped)],
            audit: vec![audit.clone()],
            counters: CounterDelta { duplicate_files: 1, ..Default::default() },
            fence,
            id: Some(esr_ingest::ports::store::new_commit_id()),
            ..Default::default()
        };
        store.commit(commit.clone()).await.unwrap();
        store.commit(commit).await.unwrap();
    }
    assert_eq!(store.counts().await.unwrap().duplicate_files, 2, "two commits, each retried once");
    assert_eq!(store.audit_log().await.unwrap().len(), 2);
    // Without an id, every call is a write of its own.
    let plain = Commit { counters: CounterDelta { duplicate_files: 1, ..Default::default() }, ..Default::default() };
    store.commit(plain.clone()).await.unwrap();
    store.commit(plain).await.unwrap();
    assert_eq!(store.counts().await.unwrap().duplicate_files, 4);
}

/// A file counted by one writer is not counted again by another that planned it before
/// (a backfill racing a pass): the second commit is refused whole, and a retry of the
/// first (its reply lost) is still recognised as written.
pub async fn a_file_is_counted_once_whoever_applies_it(store: Arc<dyn Store>) {
    let name = "DE_SEV_RMC_20220730_00000001.DAT";
    let counted = LedgerEntry { counted: true, ..entry(name, FileState::Applied) };
    let first_count = |audit: &str| Commit {
        ledger: vec![counted.clone()],
        audit: vec![AuditEntry {
            at: Utc::now(),
            actor: "test".into(),
            action: "apply".into(),
            region: None,
            seq: None,
            detail: audit.into(),
        }],
        counters: CounterDelta { applied_files: 1, ..Default::default() },
        id: Some(esr_ingest::ports::store::new_commit_id()),
        expect_uncounted: vec![name.into()],
        ..Default::default()
    };
    let first = first_count("first");
    store.commit(first.clone()).await.unwrap();
    store.commit(first).await.expect("a retry of a written commit is not refused");
    let refused = store.commit(first_count("second")).await.unwrap_err();
    assert!(matches!(refused, esr_ingest::ports::store::StoreError::Superseded(_)), "{refused}");
    // through a file's unit of work: refused, and its records go with it where atomic
    let mut txn = store.begin_file(ticket(name)).await.unwrap();
    txn.apply(vec![record("POS", "1", 30, 1, 2, false, "x")]).await.unwrap();
    let refused = txn.commit(first_count("third")).await.unwrap_err();
    assert!(matches!(refused, esr_ingest::ports::store::StoreError::Superseded(_)), "{refused}");
    assert_eq!(store.counts().await.unwrap().applied_files, 1);
    assert_eq!(store.audit_log().await.unwrap().len(), 1, "nothing of a refused commit is written");
    if store.atomic_files() {
        assert!(crate::common::engine::export_lines(store.as_ref()).await.is_empty());
    }
    assert_eq!(store.snapshot().await.unwrap().ledger, vec![counted]);
}

fn sweep_after(name: &str, generation: u32, full: Option<FullFileMode>) -> Sweep {
    let NameVerdict::Batch(f) = NameProfile::default().classify(name) else { panic!("{name}") };
    Sweep {
        region: f.region.clone(),
        file: name.into(),
        generation,
        version: Version { date: f.date, seq: f.seq, line: 0 },
        full: full.map(|mode| FullFile { mode, record_types: vec!["POR".into(), "POS".into()] }),
    }
}

async fn deliver(store: &dyn Store, receipt: &str, records: Vec<Record>) {
    one(store.apply_delivered(vec![delivered(receipt, 1, records)]).await).unwrap();
}

/// `(type/key, deleted, file, (day, seq, line))` of every exported record.
async fn shown(store: &dyn Store) -> Vec<(String, bool, String, (u32, u64, u64))> {
    use chrono::Datelike;
    crate::common::engine::export_lines(store)
        .await
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let date = NaiveDate::parse_from_str(v["version"]["date"].as_str().unwrap(), "%Y-%m-%d").unwrap();
            (
                format!("{}/{}", v["type"].as_str().unwrap(), v["key"].as_str().unwrap()),
                v["deleted"].as_bool().unwrap(),
                v["file"].as_str().unwrap().to_string(),
                (date.day(), v["version"]["seq"].as_u64().unwrap(), v["version"]["line"].as_u64().unwrap()),
            )
        })
        .collect()
}

/// Full files (`core::full`): what a full file lacks becomes a tombstone of the earliest
/// full file after its last write, whatever order the files come in; a late change
/// cannot bring it back; sweeps are idempotent; `report` changes nothing.
pub async fn full_files_remove_what_they_lack_in_any_order(store: Arc<dyn Store>) {
    use FullFileMode::{Report, Tombstone};
    let (c1, c2, f3) =
        ("DE_SEV_RMC_20220730_00000001.DAT", "DE_SEV_RMC_20220731_00000002.DAT", "DE_SEV_RMF_20220731_00000003.DAT");
    let at = |name: &str, r: Record| Record { file: name.into(), ..r };
    deliver(
        store.as_ref(),
        "c1",
        vec![
            record("POS", "1", 30, 1, 2, false, "a"),
            record("POS", "2", 30, 1, 3, false, "b"),
            record("POR", "9", 30, 1, 4, true, ""),
        ],
    )
    .await;
    assert_eq!(store.sweep(&sweep_after(c1, 1, None)).await.unwrap(), Swept::default(), "no full file yet");
    // the full file holds POS/1 only: POS/2 goes; the tombstone POR/9 keeps its version
    deliver(store.as_ref(), "f3", vec![at(f3, record("POS", "1", 31, 3, 2, false, "a2"))]).await;
    let swept = store.sweep(&sweep_after(f3, 1, Some(Tombstone))).await.unwrap();
    assert_eq!(swept, Swept { removed: 1, reported: 0 });
    // a late change older than the full file cannot bring a record back
    deliver(store.as_ref(), "c2", vec![at(c2, record("POS", "5", 31, 2, 2, false, "late"))]).await;
    assert_eq!(store.sweep(&sweep_after(c2, 1, None)).await.unwrap().removed, 1);
    // an older full file that comes last: in version order it removed POS/2
    let f_mid = "DE_SEV_RMF_20220730_00000005.DAT";
    deliver(store.as_ref(), "fm", vec![at(f_mid, record("POS", "1", 30, 5, 2, false, "old"))]).await;
    assert_eq!(store.sweep(&sweep_after(f_mid, 1, Some(Tombstone))).await.unwrap().removed, 0);
    let expected = vec![
        ("POR/9".to_string(), true, c1.to_string(), (30, 1, 4)),
        ("POS/1".to_string(), false, f3.to_string(), (31, 3, 2)),
        ("POS/2".to_string(), true, f_mid.to_string(), (30, 5, 0)),
        ("POS/5".to_string(), true, f3.to_string(), (31, 3, 0)),
    ];
    assert_eq!(shown(store.as_ref()).await, expected);
    // idempotent: the same delivery reports its count again, a redelivery removes nothing
    assert_eq!(store.sweep(&sweep_after(f3, 1, Some(Tombstone))).await.unwrap().removed, 1);
    assert_eq!(store.sweep(&sweep_after(f3, 2, Some(Tombstone))).await.unwrap().removed, 0);
    assert_eq!(shown(store.as_ref()).await, expected);
    // a newer line brings a removed record back
    let c6 = "DE_SEV_RMC_20220801_00000006.DAT";
    let back = Record {
        version: Version { date: NaiveDate::from_ymd_opt(2022, 8, 1).unwrap(), seq: 6, line: 2 },
        ..at(c6, record("POS", "2", 30, 6, 2, false, "back"))
    };
    deliver(store.as_ref(), "c6", vec![back]).await;
    assert_eq!(store.sweep(&sweep_after(c6, 1, None)).await.unwrap().removed, 0);
    let now = shown(store.as_ref()).await;
    assert_eq!(now[2], ("POS/2".to_string(), false, c6.to_string(), (1, 6, 2)));
    // report mode counts what a full file lacks and changes nothing
    let wes = |key: &str| Record { region: "WES".into(), ..record("POS", key, 30, 1, 2, false, "w") };
    deliver(store.as_ref(), "w1", vec![wes("70"), wes("71")]).await;
    let report = "DE_WES_RMF_20220731_00000004.DAT";
    let swept = store.sweep(&sweep_after(report, 1, Some(Report))).await.unwrap();
    assert_eq!(swept, Swept { removed: 0, reported: 2 });
    assert_eq!(shown(store.as_ref()).await.iter().filter(|r| r.0.starts_with("POS/7") && !r.1).count(), 2);
}

/// One file of [`files_in_one_unit_count_as_units_of_one`]: its ticket, its lines in
/// batches, and its full-file mode.
struct UnitFile {
    ticket: FileTicket,
    batches: Vec<Vec<Record>>,
    rejects: Vec<Reject>,
    full: bool,
}

/// A random run of files for `region` whose records have types `types`: identities
/// repeat within and across files, versions go back (late files: stale lines), files come
/// again (unchanged lines), some are tombstones, some lines are rejected, some files are
/// full files (their sweep touches records), some are large (a store may stage them).
fn unit_files(seed: u64, region: &str, types: [&str; 2]) -> Vec<UnitFile> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut files: Vec<UnitFile> = Vec::new();
    let mut seqs: Vec<u64> = (1..=60).collect();
    for _ in 0..rng.random_range(2..=7) {
        if !files.is_empty() && rng.random_bool(0.2) {
            // an earlier file again
            let j = rng.random_range(0..files.len());
            let UnitFile { ticket, batches, rejects, full } = &files[j];
            let ticket = FileTicket { reapply: true, generation: ticket.generation + 1, ..ticket.clone() };
            let again = UnitFile { ticket, batches: batches.clone(), rejects: rejects.clone(), full: *full };
            files.push(again);
            continue;
        }
        let seq = seqs.remove(rng.random_range(0..seqs.len()));
        let day = rng.random_range(1..=28u32);
        let full = rng.random_bool(0.25);
        let name = format!("DE_{region}_{}_202207{day:02}_{seq:08}.DAT", if full { "RMF" } else { "RMC" });
        let mut ticket = ticket(&name);
        if rng.random_bool(0.2) {
            ticket = large(ticket);
        }
        let lines: Vec<Record> = (0..rng.random_range(1..=25u64))
            .map(|i| {
                let deleted = rng.random_bool(0.1);
                let title = format!("t{}", rng.random_range(0..4));
                let rtype = types[rng.random_range(0..2)];
                // identities of this run only (the region's last letters)
                let key = format!("{}{}", &region[1..], rng.random_range(1..=8));
                Record {
                    region: region.into(),
                    file: name.as_str().into(),
                    ..record(rtype, &key, day, seq, i + 2, deleted, &title)
                }
            })
            .collect();
        let mut batches = Vec::new();
        let mut rest = lines.as_slice();
        while !rest.is_empty() {
            let (batch, after) = rest.split_at(rng.random_range(1..=rest.len()));
            batches.push(batch.to_vec());
            rest = after;
        }
        let rejects = (0..rng.random_range(0..=2u64))
            .map(|i| Reject {
                file: name.as_str().into(),
                line: 100 + i,
                reason: "field 2: not all digits".into(),
                raw: format!("POR,x{i}"),
            })
            .collect();
        files.push(UnitFile { ticket, batches, rejects, full });
    }
    files
}

fn unit_sweep(f: &UnitFile, types: [&str; 2]) -> Sweep {
    let file = &f.ticket.file;
    Sweep {
        region: file.region.clone(),
        file: file.name.clone(),
        generation: f.ticket.generation,
        version: Version { date: file.date, seq: file.seq, line: 0 },
        full: f.full.then(|| FullFile {
            mode: FullFileMode::Tombstone,
            record_types: types.iter().map(|t| t.to_string()).collect(),
        }),
    }
}

/// What applying `files` did: each file's tally and removals.
async fn apply_files(store: &dyn Store, files: &[UnitFile], types: [&str; 2], together: bool) -> Vec<(Tally, Swept)> {
    let mut out = Vec::new();
    let mut txn: Option<Box<dyn esr_ingest::ports::store::FileTxn>> = None;
    for f in files {
        let ticket = FileTicket { together, ..f.ticket.clone() };
        let t = match (txn.as_mut(), together) {
            (Some(t), true) => {
                t.next_file(ticket).await.unwrap();
                t
            }
            _ => txn.insert(store.begin_file(ticket).await.unwrap()),
        };
        for batch in &f.batches {
            t.apply(batch.clone()).await.unwrap();
        }
        if !f.rejects.is_empty() {
            t.reject(f.rejects.clone()).await.unwrap();
        }
        let tally = t.settle().await.unwrap();
        let swept = t.sweep(&unit_sweep(f, types)).await.unwrap();
        out.push((tally, swept));
        if !together && let Some(t) = txn.take() {
            t.commit(Commit::default()).await.unwrap();
        }
    }
    if let Some(t) = txn {
        t.commit(Commit::default()).await.unwrap();
    }
    out
}

/// A unit of work that takes several files (`FileTxn::next_file`) gives every file
/// exactly the counts (applied, stale, unchanged, removed) it gets in a unit of its own
/// after the files before it, and leaves exactly the same records. A store that takes one
/// file per unit says so (`group_lines` 0) and refuses a second file.
pub async fn files_in_one_unit_count_as_units_of_one(store: Arc<dyn Store>) {
    if store.group_lines() == 0 {
        let mut txn = store.begin_file(ticket("DE_SEV_RMC_20220730_00000001.DAT")).await.unwrap();
        assert!(txn.next_file(ticket("DE_SEV_RMC_20220731_00000002.DAT")).await.is_err());
        return;
    }
    let (alone, together) = (["POS", "POR"], ["QOS", "QOR"]);
    for seed in 0..32 {
        // each seed in its own regions and types, so the runs do not meet
        let letters: String = [seed / 26, seed % 26].iter().map(|n| char::from(b'A' + *n as u8)).collect();
        let (a, b) = (format!("A{letters}"), format!("B{letters}"));
        let (a_types, b_types): ([&str; 2], [&str; 2]) = (alone, together);
        let one_by_one = apply_files(store.as_ref(), &unit_files(seed, &a, a_types), a_types, false).await;
        let in_one_unit = apply_files(store.as_ref(), &unit_files(seed, &b, b_types), b_types, true).await;
        assert_eq!(in_one_unit, one_by_one, "seed {seed}: each file's counts");
    }
    // the records: the same, type for type and region for region
    let all = shown(store.as_ref()).await;
    let alone_records: Vec<_> = all.iter().filter(|r| !r.0.starts_with('Q')).cloned().collect();
    let unit_records: Vec<_> = all
        .iter()
        .filter(|r| r.0.starts_with('Q'))
        .map(|(id, deleted, file, version)| {
            let letters = &file[4..6]; // regions B?? here are A?? in the run alone
            let file = file.replacen(&format!("_B{letters}_"), &format!("_A{letters}_"), 1);
            (id.replacen('Q', "P", 1), *deleted, file, *version)
        })
        .collect();
    let mut unit_records = unit_records;
    unit_records.sort();
    let mut alone_records = alone_records;
    alone_records.sort();
    assert!(!alone_records.is_empty());
    assert_eq!(unit_records, alone_records);
}

/// A ledger of every kind of entry across three regions (one with a stream, one whose
/// stream has no expected SEQ yet, one with no stream), drawn from `seed`.
fn mixed_ledger(seed: u64) -> (Vec<LedgerEntry>, Vec<StreamRecord>) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let t0 = Utc.with_ymd_and_hms(2022, 8, 1, 0, 0, 0).unwrap();
    let states =
        [FileState::Pending, FileState::Applied, FileState::Delivered, FileState::Quarantined, FileState::Skipped];
    let mut ledger = Vec::new();
    for (region, files) in [("SEV", 40u64), ("WES", 8), ("NOR", 6)] {
        for seq in 1..=files {
            for copy in 0..rng.random_range(1..=2u32) {
                let name = format!("DE_{region}_RMC_2022{:02}{:02}_{seq:08}.DAT", 7 + copy, 1 + seq % 28);
                let mut e = entry(&name, states[rng.random_range(0..states.len())]);
                if rng.random_bool(0.2) {
                    e.sha256 = None;
                }
                if rng.random_bool(0.1) {
                    e.conflict = Some(Conflict {
                        fingerprint: format!("fp-{seq}-b"),
                        sha256: "cd".repeat(32),
                        reason: "conflict: test".into(),
                        at: t0,
                    });
                }
                e.fingerprint = format!("fp-{region}-{seq}-{copy}");
                e.first_seen = t0 + chrono::Duration::hours(rng.random_range(0..2000));
                ledger.push(e);
            }
        }
    }
    let mut bad = entry("not-a-batch-name.txt", FileState::Quarantined);
    bad.reason = Some("bad name".into());
    ledger.push(bad);
    let streams = vec![
        StreamRecord { region: "SEV".into(), next_seq: Some(rng.random_range(1..=41)), ..Default::default() },
        StreamRecord { region: "WES".into(), next_seq: None, ..Default::default() },
    ];
    (ledger, streams)
}

/// The reads that follow the active state (`active`, `known_names`, `ledger_lookup`,
/// `region_history`, `recent_audit`) show exactly what the whole ledger and audit log
/// say, as the core's predicate (`LedgerEntry::is_settled`) cuts them.
pub async fn active_reads_agree_with_the_whole_ledger(store: Arc<dyn Store>) {
    for seed in 0..3u64 {
        let (ledger, streams) = mixed_ledger(seed);
        let audit = (0..5).map(|i| AuditEntry {
            at: Utc.with_ymd_and_hms(2022, 8, 2, 0, 0, i).unwrap(),
            actor: "ops".into(),
            action: format!("action {seed}/{i}"),
            region: None,
            seq: None,
            detail: String::new(),
        });
        store.commit(Commit { ledger, streams, audit: audit.collect(), ..Default::default() }).await.unwrap();
        let whole = store.snapshot().await.unwrap();
        let next = |region: Option<&str>| {
            whole.streams.iter().find(|s| Some(s.region.as_str()) == region).and_then(|s| s.next_seq)
        };
        // active
        let active = store.active().await.unwrap();
        let expected: Vec<LedgerEntry> =
            whole.ledger.iter().filter(|e| !e.is_settled(next(e.region()))).cloned().collect();
        assert_eq!(active.streams, whole.streams, "seed {seed}");
        assert_eq!(active.ledger, expected, "seed {seed}");
        assert!(active.ledger.len() < whole.ledger.len(), "seed {seed}: some entries are settled");
        // known_names
        let known = store.known_names().await.unwrap();
        let mut names: Vec<(String, String, Option<String>)> =
            known.into_iter().map(|k| (k.name, k.fingerprint, k.conflict_fingerprint)).collect();
        names.sort();
        let expected: Vec<_> = whole
            .ledger
            .iter()
            .map(|e| (e.name.clone(), e.fingerprint.clone(), e.conflict.as_ref().map(|c| c.fingerprint.clone())))
            .collect();
        assert_eq!(names, expected, "seed {seed}");
        // ledger_lookup
        let wanted: Vec<String> = whole.ledger.iter().step_by(3).map(|e| e.name.clone()).collect();
        let positions = vec![("SEV".to_string(), 7), ("NOR".to_string(), 2), ("XXX".to_string(), 1)];
        let found = store.ledger_lookup(wanted.clone(), positions.clone()).await.unwrap();
        let expected: Vec<LedgerEntry> = whole
            .ledger
            .iter()
            .filter(|e| {
                wanted.contains(&e.name)
                    || positions.iter().any(|(r, q)| e.region() == Some(r.as_str()) && e.seq() == Some(*q))
            })
            .cloned()
            .collect();
        assert_eq!(found, expected, "seed {seed}");
        // region_history
        let since = Utc.with_ymd_and_hms(2022, 9, 15, 0, 0, 0).unwrap();
        let history = store.region_history(since).await.unwrap();
        let mut regions: Vec<&str> = whole.ledger.iter().filter_map(|e| e.region()).collect();
        regions.sort();
        regions.dedup();
        assert_eq!(history.iter().map(|h| h.region.as_str()).collect::<Vec<_>>(), regions, "seed {seed}");
        for h in &history {
            let of: Vec<&LedgerEntry> = whole.ledger.iter().filter(|e| e.region() == Some(h.region.as_str())).collect();
            assert_eq!(h.first_arrival, of.iter().map(|e| e.first_seen).min(), "{}", h.region);
            assert_eq!(h.last_arrival, of.iter().map(|e| e.first_seen).max(), "{}", h.region);
            let processed = of.iter().filter(|e| e.state.is_processed()).filter_map(|e| e.seq()).max();
            assert_eq!(h.last_processed_seq, processed, "{}", h.region);
            let mut recent: Vec<_> = of.iter().map(|e| e.first_seen).filter(|t| *t > since).collect();
            let mut got = h.recent_arrivals.clone();
            recent.sort();
            got.sort();
            assert_eq!(got, recent, "{}", h.region);
        }
        // recent_audit
        let log = store.audit_log().await.unwrap();
        assert_eq!(store.recent_audit(3).await.unwrap(), log[log.len() - 3..].to_vec(), "seed {seed}");
    }
}

#[macro_export]
macro_rules! store_suite {
    ($name:ident, $factory:expr) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn active_reads_agree_with_the_whole_ledger() {
                let (_guard, store) = $factory().await;
                conformance::store::active_reads_agree_with_the_whole_ledger(store).await;
            }
            #[tokio::test]
            async fn delivered_calls_count_as_line_by_line() {
                let (_guard, store) = $factory().await;
                conformance::store::delivered_calls_count_as_line_by_line(store).await;
            }
            #[tokio::test]
            async fn full_files_remove_what_they_lack_in_any_order() {
                let (_guard, store) = $factory().await;
                conformance::store::full_files_remove_what_they_lack_in_any_order(store).await;
            }
            #[tokio::test]
            async fn a_file_is_counted_once_whoever_applies_it() {
                let (_guard, store) = $factory().await;
                conformance::store::a_file_is_counted_once_whoever_applies_it(store).await;
            }
            #[tokio::test]
            async fn a_retried_commit_counts_once() {
                let (_guard, store) = $factory().await;
                conformance::store::a_retried_commit_counts_once(store).await;
            }
            #[tokio::test]
            async fn leases_fence_out_a_former_owner() {
                let (_guard, store) = $factory().await;
                conformance::store::leases_fence_out_a_former_owner(store).await;
            }
            #[tokio::test]
            async fn files_in_state_match_the_snapshot() {
                let (_guard, store) = $factory().await;
                conformance::store::files_in_state_match_the_snapshot(store).await;
            }
            #[tokio::test]
            async fn next_seq_never_goes_back() {
                let (_guard, store) = $factory().await;
                conformance::store::next_seq_never_goes_back(store).await;
            }
            #[tokio::test]
            async fn shared_documents_compare_and_set() {
                let (_guard, store) = $factory().await;
                conformance::store::shared_documents_compare_and_set(store).await;
            }
            #[tokio::test]
            async fn ledger_and_streams_round_trip() {
                let (_guard, store) = $factory().await;
                conformance::store::ledger_and_streams_round_trip(store).await;
            }
            #[tokio::test]
            async fn file_txn_applies_the_version_rule() {
                let (_guard, store) = $factory().await;
                conformance::store::file_txn_applies_the_version_rule(store).await;
            }
            #[tokio::test]
            async fn large_files_apply_the_same_version_rule() {
                let (_guard, store) = $factory().await;
                conformance::store::large_files_apply_the_same_version_rule(store).await;
            }
            #[tokio::test]
            async fn field_names_stay_with_the_values_they_were_stored_with() {
                let (_guard, store) = $factory().await;
                conformance::store::field_names_stay_with_the_values_they_were_stored_with(store).await;
            }
            #[tokio::test]
            async fn dropped_file_txn_leaves_nothing() {
                let (_guard, store) = $factory().await;
                conformance::store::dropped_file_txn_leaves_nothing(store).await;
            }
            #[tokio::test]
            async fn commit_with_file_is_atomic_and_counted() {
                let (_guard, store) = $factory().await;
                conformance::store::commit_with_file_is_atomic_and_counted(store).await;
            }
            #[tokio::test]
            async fn delivered_batches_count_once() {
                let (_guard, store) = $factory().await;
                conformance::store::delivered_batches_count_once(store).await;
            }
            #[tokio::test]
            async fn delivered_batches_obey_the_version_rule() {
                let (_guard, store) = $factory().await;
                conformance::store::delivered_batches_obey_the_version_rule(store).await;
            }
            #[tokio::test]
            async fn files_in_one_unit_count_as_units_of_one() {
                let (_guard, store) = $factory().await;
                conformance::store::files_in_one_unit_count_as_units_of_one(store).await;
            }
            #[tokio::test]
            async fn audit_log_keeps_order() {
                let (_guard, store) = $factory().await;
                conformance::store::audit_log_keeps_order(store).await;
            }
        }
    };
}
