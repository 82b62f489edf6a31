//! The engine and store over the library directly (not the binary), for the tests that
//! drive the engine themselves.

use esr_ingest::adapters::folder::FolderSource;
use esr_ingest::adapters::in_process::InProcessDelivery;
use esr_ingest::adapters::sqlite::SqliteStore;
use esr_ingest::core::name::NameProfile;
use esr_ingest::core::schema::Layout;
use esr_ingest::core::sequencer::SequenceRules;
use esr_ingest::engine::{Engine, Heartbeat, SystemClock, export_line};
use esr_ingest::ports::store::Store;
use std::path::Path;
use std::sync::Arc;

/// An engine over a folder and a SQLite file, with in-process delivery.
pub async fn embedded_engine(inbox: &Path, db: &Path) -> Engine {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(db).await.expect("open the SQLite store"));
    Engine {
        source: Arc::new(FolderSource::new(inbox)),
        delivery: Arc::new(InProcessDelivery::new(store.clone())),
        store,
        profile: NameProfile::default(),
        layouts: esr_ingest::core::schema::Layouts::single(Arc::new(Layout::default_esr())),
        full_files: Default::default(),
        rules: SequenceRules::default(),
        clock: Arc::new(SystemClock),
        heartbeat: Arc::new(Heartbeat::default()),
        ownership: None,
        known: Default::default(),
    }
}

/// The store's export as lines.
pub async fn export_lines(store: &dyn Store) -> Vec<String> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let mut lines = Vec::new();
    let (sent, ()) = tokio::join!(store.export(tx), async {
        while let Some(batch) = rx.recv().await {
            lines.extend(batch.iter().map(export_line));
        }
    });
    sent.expect("export");
    lines
}

/// A delivery that never groups files into units of work (`group_lines` 0), so an engine
/// over it applies every file the one-file way: the reference the units are compared with.
pub struct OneAtATime(pub Arc<dyn esr_ingest::ports::delivery::Delivery>);

#[async_trait::async_trait]
impl esr_ingest::ports::delivery::Delivery for OneAtATime {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn asynchronous(&self) -> bool {
        self.0.asynchronous()
    }
    async fn open(
        &self,
        ticket: esr_ingest::ports::store::FileTicket,
    ) -> Result<Box<dyn esr_ingest::ports::delivery::FileDelivery>, esr_ingest::ports::delivery::DeliveryError> {
        self.0.open(ticket).await
    }
    fn group_lines(&self) -> u64 {
        0
    }
    async fn probe(
        &self,
    ) -> Result<esr_ingest::ports::delivery::DeliveryProbe, esr_ingest::ports::delivery::DeliveryError> {
        self.0.probe().await
    }
}

/// [`embedded_engine`] whose files all go the one-file way ([`OneAtATime`]).
pub async fn one_file_at_a_time_engine(inbox: &Path, db: &Path) -> Engine {
    let mut engine = embedded_engine(inbox, db).await;
    engine.delivery = Arc::new(OneAtATime(engine.delivery.clone()));
    engine
}
