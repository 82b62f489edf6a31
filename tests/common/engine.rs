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
