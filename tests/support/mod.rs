//! Shared pieces for tests that use the library directly (not the binary).
#![allow(dead_code)]

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
        layout: Arc::new(Layout::default_esr()),
        rules: SequenceRules::default(),
        clock: Arc::new(SystemClock),
        heartbeat: Arc::new(Heartbeat::default()),
        ownership: None,
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

/// A valid POR line (13 fields).
pub fn por(key: u64, indicator: &str, title: &str) -> String {
    if indicator == "D" {
        return format!("POR,{key},,D,,,,,,,,,");
    }
    format!("POR,{key},,C,42,{title},DPN1,SEV,Y,RA7,1234,Org,Loc")
}

/// A valid POS line (16 fields).
pub fn pos(key: u64, indicator: &str, title: &str) -> String {
    if indicator == "D" {
        return format!("POS,{key},,D,,,,,,,,,,,,");
    }
    format!("POS,{key},,C,7,{title},N1,Ward,,DPN2,SEV,RA7,B5,XN05,Band 5,WK1")
}

/// A whole file's text with header and trailer.
pub fn file_text(region: &str, kind: &str, date: &str, seq: u64, lines: &[String]) -> String {
    let mut s = format!("HDR,{kind},{region},{date},{seq:08}\n");
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s.push_str(&format!("TRL,{}\n", lines.len()));
    s
}
