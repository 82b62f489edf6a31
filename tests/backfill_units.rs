//! A backfill puts a region's consecutive files into units of work where the store allows
//! it (`engine::group`); every file must end exactly as applying it on its own would
//! leave it.
//!
//! Random sets of files (two regions, SEQs with gaps so some files are held and never
//! applied, second claimants of a SEQ, full files, content with rejected lines, deletions
//! and broken trailers) are applied by a pass, some are uploaded again, and then a date
//! range is backfilled: once by an engine whose files go into units, and once by one that
//! applies every file alone. Both must report the same for every file (processed,
//! quarantined, excluded, counts per region) and end with the same records, ledger and
//! counters.

mod common;

use common::engine::*;
use common::history::{REGIONS, build_file};
use esr_ingest::engine::{BackfillReport, Engine, Scope};
use proptest::prelude::*;
use std::path::Path;
use tokio_util::sync::CancellationToken;

/// (region, SEQ, a full file, content variant): variant 3 has a rejected line, 4 a broken
/// trailer (a file-level fault), the others differ in records and deletions.
type FileSpec = (usize, u64, bool, u8);

fn arb_file() -> impl Strategy<Value = FileSpec> {
    (0..REGIONS.len(), 1..10u64, proptest::bool::weighted(0.15), 0..6u8)
}

fn write(inbox: &Path, (region, seq, full, variant): FileSpec) {
    let (name, text) = build_file(REGIONS[region], seq, full, false, variant);
    std::fs::write(inbox.join(name), text).unwrap();
}

/// Everything a backfill reports, in an order that does not depend on how it went.
fn summary(r: &BackfillReport) -> String {
    let mut excluded = r.excluded.clone();
    excluded.sort();
    let mut quarantined = r.quarantined.clone();
    quarantined.sort();
    let mut by_region = r.by_region.clone();
    by_region.sort_by(|a, b| a.0.cmp(&b.0));
    format!(
        "processed={} tally={:?}\nquarantined={quarantined:?}\nexcluded={excluded:?}\nby_region={by_region:?}",
        r.processed, r.tally
    )
}

async fn end_state(engine: &Engine) -> (Vec<String>, Vec<String>, String) {
    let snapshot = engine.store.snapshot().await.unwrap();
    let mut ledger: Vec<String> = snapshot
        .ledger
        .iter()
        .map(|e| format!("{} {:?} {:?} {:?} counted={}", e.name, e.state, e.tally, e.sha256, e.counted))
        .collect();
    ledger.sort();
    (export_lines(engine.store.as_ref()).await, ledger, format!("{:?}", engine.store.counts().await.unwrap()))
}

async fn backfill(engine: &Engine, from: u64, to: u64) -> BackfillReport {
    let day = |d: u64| chrono::NaiveDate::from_ymd_opt(2022, 7, 1).unwrap() + chrono::Days::new(d);
    let cancel = CancellationToken::new();
    let (plan, work) = engine.backfill_plan(day(from), day(to), &[], true, &cancel).await.expect("a plan");
    engine.backfill(&plan, &work, &cancel, |_, _| {}).await.expect("a backfill")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_backfill_in_units_ends_where_one_file_at_a_time_ends(
        first in proptest::collection::vec(arb_file(), 1..24),
        again in proptest::collection::vec(arb_file(), 0..6),
        from in 0..10u64,
        days in 0..10u64,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("inbox");
        std::fs::create_dir_all(&inbox).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let units = rt.block_on(embedded_engine(&inbox, &dir.path().join("units.db")));
        let alone = rt.block_on(one_file_at_a_time_engine(&inbox, &dir.path().join("alone.db")));
        for f in &first {
            write(&inbox, *f);
        }
        for engine in [&units, &alone] {
            rt.block_on(engine.pass_over(&Scope::Full, &CancellationToken::new())).expect("a pass");
        }
        for f in &again {
            write(&inbox, *f); // new files, or the same names uploaded again
        }
        let in_units = rt.block_on(backfill(&units, from, from + days));
        let one_by_one = rt.block_on(backfill(&alone, from, from + days));
        prop_assert_eq!(summary(&in_units), summary(&one_by_one));
        prop_assert_eq!(rt.block_on(end_state(&units)), rt.block_on(end_state(&alone)));
    }
}
