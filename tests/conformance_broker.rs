//! The delivery conformance suite against RabbitMQ (started by `scripts/test.sh`), with
//! consumers applying into a SQLite store; and the consumers' heartbeat through a long
//! record-by-record fallback.

mod common;
mod conformance;

use esr_ingest::adapters::rabbitmq::{ConsumerPool, Link, RabbitDelivery, RabbitSettings};
use esr_ingest::adapters::sqlite::SqliteStore;
use esr_ingest::core::schema::Layout;
use esr_ingest::ports::delivery::Delivery;
use esr_ingest::ports::store::Store;
use std::sync::Arc;
use tokio_util::sync::{CancellationToken, DropGuard};

struct Guard {
    _dir: tempfile::TempDir,
    _consumers: DropGuard,
}

/// A topology of its own under `names`.
fn settings(names: &str, records_per_message: usize) -> RabbitSettings {
    RabbitSettings {
        exchange: format!("{names}.x"),
        queue: format!("{names}.q"),
        dead_letter_exchange: format!("{names}.dlx"),
        dead_letter_queue: format!("{names}.dlq"),
        records_per_message,
        ..RabbitSettings::default()
    }
}

async fn rabbitmq() -> (Guard, Arc<dyn Delivery>, Arc<dyn Store>) {
    let url = std::env::var("ESR_TEST_AMQP_URL")
        .expect("ESR_TEST_AMQP_URL is not set: run the tests with scripts/test.sh, which starts the servers");
    let names = common::broker::unique("esr-conf");
    let settings = settings(&names, 40);
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("store.db")).await.unwrap());
    let publisher = Arc::new(Link::new(&url, "conformance publisher", settings.clone()));
    let consumer = Arc::new(Link::new(&url, "conformance consumer", settings));
    let cancel = CancellationToken::new();
    ConsumerPool::new(
        consumer,
        store.clone(),
        esr_ingest::core::schema::Layouts::single(Arc::new(Layout::default_esr())),
    )
    .spawn(cancel.clone(), &esr_ingest::engine::Heartbeat::default());
    let delivery: Arc<dyn Delivery> = Arc::new(RabbitDelivery::new(publisher, store.clone()));
    (Guard { _dir: dir, _consumers: cancel.drop_guard() }, delivery, store)
}

delivery_suite!(rabbitmq_delivery, rabbitmq);

/// A consumer working through a refused store call message by message (one poison
/// record among them) beats its heartbeat at each message: however many messages the
/// fallback takes, with a store slow but answering, `/healthz` never reports it wedged.
#[tokio::test]
async fn a_consumer_beats_while_it_applies_a_refused_call_message_by_message() {
    use esr_ingest::adapters::unreliable::{FaultKind, FaultPlan, UnreliableStore};
    use std::time::Duration;
    let url = std::env::var("ESR_TEST_AMQP_URL")
        .expect("ESR_TEST_AMQP_URL is not set: run the tests with scripts/test.sh, which starts the servers");
    let names = common::broker::unique("esr-beat");
    let settings = RabbitSettings { consumers: 1, ..settings(&names, 1) };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    // The store refuses one record for good (as a constraint would).
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON records WHEN NEW.key = '7'
             BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END;",
        )
        .unwrap();
    const MESSAGES: u64 = 100;
    let publisher = Arc::new(Link::new(&url, "beat publisher", settings.clone()));
    let delivery = RabbitDelivery::new(publisher, sqlite.clone());
    let mut d = delivery.open(conformance::delivery::ticket()).await.unwrap();
    d.send(conformance::delivery::records(MESSAGES)).await.unwrap();
    d.settle().await.unwrap();
    drop(d);

    // Every store call of the consumers takes 100 ms: the fallback takes over 10 s.
    let plan = Arc::new(FaultPlan::new(1, 1.0, vec![FaultKind::Pause], Duration::from_millis(100)));
    let slow: Arc<dyn Store> = Arc::new(UnreliableStore { inner: sqlite.clone(), plan });
    let heartbeat = esr_ingest::engine::Heartbeat::default();
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let consumer = Arc::new(Link::new(&url, "beat consumer", settings));
    let layouts = esr_ingest::core::schema::Layouts::single(Arc::new(Layout::default_esr()));
    ConsumerPool::new(consumer, slow, layouts).spawn(cancel.clone(), &heartbeat);

    // Watch the consumer while the fallback runs: silent for 5 s is far more than one
    // message takes. (`wedged_workers` at a later `now` asks for less silence.)
    let probe_ahead = esr_ingest::adapters::rabbitmq::CONSUMER_WEDGED_AFTER - Duration::from_secs(5);
    let mut silent = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let progress = sqlite.delivery_progress(conformance::delivery::NAME, 1).await.unwrap();
        if progress.applied + progress.dead_lettered == MESSAGES {
            assert_eq!(progress.dead_lettered, 1, "{progress:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the consumer did not finish: {progress:?}");
        let wedged = heartbeat.wedged_workers(chrono::Utc::now() + probe_ahead);
        if !wedged.is_empty() {
            silent.push(progress.applied);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        silent.is_empty(),
        "the consumer was silent for over 5 s at {} probes, with applied = {silent:?}",
        silent.len()
    );
}
