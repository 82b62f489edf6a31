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
use std::sync::atomic::{AtomicU32, Ordering};

fn database_uri(base: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let (base, query) = match base.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (base, String::new()),
    };
    let n = N.fetch_add(1, Ordering::SeqCst);
    format!("{}/esr_test_{}_{n}{query}", base.trim_end_matches('/'), std::process::id())
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
    ledger_and_streams_round_trip,
    file_txn_applies_the_version_rule,
    large_files_apply_the_same_version_rule,
    field_names_stay_with_the_values_they_were_stored_with,
    dropped_file_txn_leaves_nothing,
    commit_with_file_is_atomic_and_counted,
    delivered_batches_count_once,
    delivered_batches_obey_the_version_rule,
    audit_log_keeps_order,
    shared_documents_compare_and_set,
    leases_fence_out_a_former_owner,
    next_seq_never_goes_back,
    files_in_state_match_the_snapshot,
);
