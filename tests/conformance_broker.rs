//! The delivery conformance suite against RabbitMQ (started by `scripts/test.sh`), with
//! consumers applying into a SQLite store.

mod common;
mod conformance;

use esr_ingest::adapters::rabbitmq::{ConsumerPool, Link, RabbitDelivery, RabbitSettings};
use esr_ingest::adapters::sqlite::SqliteStore;
use esr_ingest::core::schema::Layout;
use esr_ingest::ports::delivery::Delivery;
use esr_ingest::ports::store::Store;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio_util::sync::{CancellationToken, DropGuard};

struct Guard {
    _dir: tempfile::TempDir,
    _consumers: DropGuard,
}

async fn rabbitmq() -> (Guard, Arc<dyn Delivery>, Arc<dyn Store>) {
    static N: AtomicU32 = AtomicU32::new(0);
    let url = std::env::var("ESR_TEST_AMQP_URL")
        .expect("ESR_TEST_AMQP_URL is not set: run the tests with scripts/test.sh, which starts the servers");
    let names = format!("esr-conf-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
    let settings = RabbitSettings {
        exchange: format!("{names}.x"),
        queue: format!("{names}.q"),
        dead_letter_exchange: format!("{names}.dlx"),
        dead_letter_queue: format!("{names}.dlq"),
        records_per_message: 40,
        ..RabbitSettings::default()
    };
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
