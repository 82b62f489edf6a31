//! The delivery conformance suite: every `Delivery` must make a file's records durable
//! by the time `settle` returns, and a file whose delivery is abandoned (dropped) must not
//! be marked done. Records delivered twice must be harmless.

use esr_ingest::core::ledger::FileState;
use esr_ingest::core::name::{NameProfile, NameVerdict};
use esr_ingest::core::record::{Fields, Record};
use esr_ingest::core::version::Version;
use esr_ingest::ports::delivery::Delivery;
use esr_ingest::ports::store::{Commit, FileTicket, Store};
use std::sync::Arc;

pub const NAME: &str = "DE_SEV_RMC_20220730_00000001.DAT";

pub fn ticket() -> FileTicket {
    let NameVerdict::Batch(file) = NameProfile::default().classify(NAME) else { unreachable!() };
    FileTicket { file, key: NAME.into(), reapply: false, record_lines: 0, generation: 1, together: false }
}

/// POS records with the default layout's fields (a broker's consumers check them).
pub fn records(n: u64) -> Vec<Record> {
    let layout = esr_ingest::core::schema::Layout::default_esr();
    let names = layout.record("POS").unwrap().payload_names.clone();
    (0..n)
        .map(|i| Record {
            record_type: "POS".into(),
            key: i.to_string(),
            deleted: false,
            version: Version { date: chrono::NaiveDate::from_ymd_opt(2022, 7, 30).unwrap(), seq: 1, line: i + 2 },
            region: "SEV".into(),
            file: NAME.into(),
            fields: Some(Fields::new(
                names.clone(),
                names
                    .iter()
                    .map(|n| if &**n == "position_title" { format!("t{i}") } else { String::new() })
                    .collect::<Vec<_>>()
                    .iter()
                    .map(String::as_str),
            )),
        })
        .collect()
}

fn done_commit(store_entry_state: FileState) -> Commit {
    let NameVerdict::Batch(b) = NameProfile::default().classify(NAME) else { unreachable!() };
    let now = chrono::Utc::now();
    Commit {
        ledger: vec![esr_ingest::core::ledger::LedgerEntry {
            name: NAME.into(),
            key: NAME.into(),
            batch: Some(b),
            size: 1,
            fingerprint: "f".into(),
            sha256: Some("s".into()),
            state: store_entry_state,
            reason: None,
            conflict: None,
            first_seen: now,
            updated_at: now,
            record_lines: 0,
            tally: Default::default(),
            generation: 0,
            counted: false,
        }],
        ..Default::default()
    }
}

/// Waits until the store holds `n` records: at once for in-process delivery; for a
/// broker, once its consumers applied what `settle` had confirmed.
async fn records_arrive(delivery: &dyn Delivery, store: &dyn Store, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let have = crate::common::engine::export_lines(store).await.len();
        if have == n || !delivery.asynchronous() {
            assert_eq!(have, n);
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{have} of {n} records arrived");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

pub async fn settle_makes_records_durable(delivery: Arc<dyn Delivery>, store: Arc<dyn Store>) {
    let mut d = delivery.open(ticket()).await.unwrap();
    d.send(records(2500)).await.unwrap();
    let tally = d.settle().await.unwrap();
    let expected = if delivery.asynchronous() { FileState::Delivered } else { FileState::Applied };
    // in-process, the records are applied in the file's unit of work; through a broker,
    // they are confirmed and applied later by the consumers
    let applied_now = if delivery.asynchronous() { 0 } else { 2500 };
    assert_eq!(tally, esr_ingest::core::record::Tally { applied: applied_now, ..Default::default() });
    d.commit(done_commit(expected)).await.unwrap();
    let snap = store.snapshot().await.unwrap();
    assert_eq!(snap.ledger[0].state, expected, "the commit is written as handed");
    assert_eq!(snap.ledger[0].tally, Default::default(), "the adapter does not patch the entry");
    records_arrive(delivery.as_ref(), store.as_ref(), 2500).await;
    if delivery.asynchronous() {
        let p = store.delivery_progress(NAME, 1).await.unwrap();
        assert_eq!(p.applied, 2500, "every record accounted for by a receipt");
    }
}

pub async fn abandoned_delivery_marks_nothing_done(delivery: Arc<dyn Delivery>, store: Arc<dyn Store>) {
    let mut d = delivery.open(ticket()).await.unwrap();
    d.send(records(10)).await.unwrap();
    drop(d);
    assert!(store.snapshot().await.unwrap().ledger.is_empty());
}

pub async fn delivering_twice_is_harmless(delivery: Arc<dyn Delivery>, store: Arc<dyn Store>) {
    for _ in 0..2 {
        let mut d = delivery.open(ticket()).await.unwrap();
        d.send(records(5)).await.unwrap();
        let state = if delivery.asynchronous() { FileState::Delivered } else { FileState::Applied };
        d.commit(done_commit(state)).await.unwrap(); // settles first
    }
    records_arrive(delivery.as_ref(), store.as_ref(), 5).await;
    if delivery.asynchronous() {
        // the same generation twice: the second copies were recognised, not counted
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert_eq!(store.delivery_progress(NAME, 1).await.unwrap().applied, 5);
    }
}

/// The readiness probe answers; a broker reports a dead-letter depth, in-process none.
pub async fn probe_answers(delivery: Arc<dyn Delivery>, _store: Arc<dyn Store>) {
    let probe = delivery.probe().await.expect("a reachable delivery answers its probe");
    assert_eq!(probe.dead_letter_depth.is_some(), delivery.asynchronous(), "{probe:?}");
}

#[macro_export]
macro_rules! delivery_suite {
    ($name:ident, $factory:expr) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn settle_makes_records_durable() {
                let (_guard, delivery, store) = $factory().await;
                conformance::delivery::settle_makes_records_durable(delivery, store).await;
            }
            #[tokio::test]
            async fn abandoned_delivery_marks_nothing_done() {
                let (_guard, delivery, store) = $factory().await;
                conformance::delivery::abandoned_delivery_marks_nothing_done(delivery, store).await;
            }
            #[tokio::test]
            async fn probe_answers() {
                let (_guard, delivery, store) = $factory().await;
                conformance::delivery::probe_answers(delivery, store).await;
            }
            #[tokio::test]
            async fn delivering_twice_is_harmless() {
                let (_guard, delivery, store) = $factory().await;
                conformance::delivery::delivering_twice_is_harmless(delivery, store).await;
            }
        }
    };
}
