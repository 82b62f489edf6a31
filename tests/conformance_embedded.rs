//! The port conformance suites run against the embedded adapters (folder, SQLite).

mod common;
mod conformance;

use async_trait::async_trait;
use esr_ingest::adapters::folder::FolderSource;
use esr_ingest::adapters::in_process::InProcessDelivery;
use esr_ingest::adapters::sqlite::SqliteStore;
use esr_ingest::ports::delivery::Delivery;
use esr_ingest::ports::source::ObjectSource;
use esr_ingest::ports::store::Store;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tempfile::TempDir;

async fn sqlite() -> (TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("store.db")).await.unwrap();
    (dir, Arc::new(store))
}

store_suite!(sqlite_store, sqlite);

/// The same suite with every call delayed or paused at random (no failures): the store's
/// contract holds whatever the timing.
async fn sqlite_with_delays() -> (TempDir, Arc<dyn Store>) {
    use esr_ingest::adapters::unreliable::{FaultKind, FaultPlan, UnreliableStore};
    let (dir, inner) = sqlite().await;
    let plan = FaultPlan::new(11, 0.5, vec![FaultKind::Delay, FaultKind::Pause], std::time::Duration::from_millis(20));
    (dir, Arc::new(UnreliableStore { inner, plan: Arc::new(plan) }))
}

store_suite!(sqlite_store_with_delays, sqlite_with_delays);

/// Writes files like an upstream drop would, each with a strictly newer mtime.
struct FolderUploader {
    root: PathBuf,
    clock: AtomicI64,
}

#[async_trait]
impl conformance::source::Uploader for FolderUploader {
    async fn put(&self, key: &str, bytes: &[u8]) {
        let path = self.root.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        let secs = self.clock.fetch_add(10, Ordering::SeqCst);
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(t).unwrap();
    }
}

async fn folder() -> (TempDir, Arc<dyn ObjectSource>, Arc<dyn conformance::source::Uploader>) {
    let dir = tempfile::tempdir().unwrap();
    let up = FolderUploader { root: dir.path().to_path_buf(), clock: AtomicI64::new(1_600_000_000) };
    let source: Arc<dyn ObjectSource> = Arc::new(FolderSource::new(dir.path()));
    (dir, source, Arc::new(up))
}

source_suite!(folder_source, folder);

async fn in_process() -> (TempDir, Arc<dyn Delivery>, Arc<dyn Store>) {
    let (dir, store) = sqlite().await;
    (dir, Arc::new(InProcessDelivery::new(store.clone())), store)
}

delivery_suite!(in_process_delivery, in_process);

#[tokio::test]
async fn folder_source_skips_uploads_in_progress_but_walks_every_folder() {
    let (dir, source, up) = folder().await;
    up.put(".DE_SEV_RMC_20220730_00000002.DAT.part", b"x").await;
    up.put(".staging/DE_SEV_RMC_20220730_00000003.DAT", b"x").await;
    let keys: Vec<String> = source.list().await.unwrap().into_iter().map(|l| l.key).collect();
    assert_eq!(keys, vec![".staging/DE_SEV_RMC_20220730_00000003.DAT".to_string()]);
    drop(dir);
}
