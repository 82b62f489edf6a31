//! Full files (`core::full`) through the real engine, folder source and SQLite store: for
//! random histories of change files (RMC) and full files (RMF) per region, in any arrival
//! order split into any number of passes, the export equals the oracle "apply every
//! applied file in version order, where a full file first turns every live record of its
//! region into a tombstone at (date, SEQ, line 0) and then applies its lines".
//!
//! Keys are disjoint per region: a record identity belongs to one region (a position
//! belongs to one local office). See the README's full-file rule for why that matters.

mod common;

use common::engine::*;
use common::{file_text, por, pos};
use esr_ingest::core::ledger::FileState;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
struct GenFile {
    region: &'static str,
    seq: u64,
    day: u32,
    full: bool,
    bad: bool,
    /// (is_pos, key, delete, title)
    records: Vec<(bool, u64, bool, u8)>,
}

impl GenFile {
    fn kind(&self) -> &'static str {
        if self.full { "RMF" } else { "RMC" }
    }
    fn name(&self) -> String {
        format!("DE_{}_{}_202207{:02}_{:08}.DAT", self.region, self.kind(), self.day, self.seq)
    }
    fn key(&self, key: u64) -> u64 {
        // disjoint per region
        if self.region == "SEV" { key } else { 100 + key }
    }
    fn text(&self) -> String {
        let lines: Vec<String> = self
            .records
            .iter()
            .map(|(is_pos, key, del, title)| {
                let ind = if *del { "D" } else { "C" };
                let title = format!("T{title}");
                let key = self.key(*key);
                if *is_pos { pos(key, ind, &title) } else { por(key, ind, &title) }
            })
            .collect();
        let text = file_text(self.region, self.kind(), &format!("202207{:02}", self.day), self.seq, &lines);
        if self.bad { text.replace(&format!("TRL,{}", lines.len()), &format!("TRL,{}", lines.len() + 1)) } else { text }
    }
}

fn arb_files() -> impl Strategy<Value = Vec<GenFile>> {
    let record = (any::<bool>(), 1u64..7, proptest::bool::weighted(0.15), any::<u8>());
    let file = (
        prop_oneof![Just("SEV"), Just("WES")],
        1u64..9,
        1u32..29,
        proptest::bool::weighted(0.3),
        proptest::bool::weighted(0.08),
        proptest::collection::vec(record, 1..7),
    )
        .prop_map(|(region, seq, day, full, bad, records)| GenFile { region, seq, day, full, bad, records });
    proptest::collection::vec(file, 1..14).prop_map(|files| {
        // one file per (region, SEQ), and no two files with the same version
        let (mut seqs, mut versions) = (BTreeSet::new(), BTreeSet::new());
        files.into_iter().filter(|f| seqs.insert((f.region, f.seq)) && versions.insert((f.day, f.seq))).collect()
    })
}

/// (version (day, seq, line), file, deleted, title) per identity.
type Expected = ((u32, u64, u64), String, bool, String);

/// The oracle: applied files in version order; a full file first tombstones its region.
fn oracle(files: &[GenFile], applied: &BTreeSet<String>) -> BTreeMap<(String, String), Expected> {
    let mut in_order: Vec<&GenFile> = files.iter().filter(|f| applied.contains(&f.name())).collect();
    in_order.sort_by_key(|f| (f.day, f.seq));
    let mut out: BTreeMap<(String, String), (Expected, &'static str)> = BTreeMap::new();
    for f in in_order {
        if f.full {
            for ((version, file, deleted, title), region) in out.values_mut() {
                if *region == f.region && !*deleted {
                    (*version, *file, *deleted, *title) = ((f.day, f.seq, 0), f.name(), true, String::new());
                }
            }
        }
        for (i, (is_pos, key, del, title)) in f.records.iter().enumerate() {
            let version = (f.day, f.seq, i as u64 + 2); // the header is line 1
            let id = ((if *is_pos { "POS" } else { "POR" }).to_string(), f.key(*key).to_string());
            if out.get(&id).is_none_or(|((v, ..), _)| version > *v) {
                let title = if *del { String::new() } else { format!("T{title}") };
                out.insert(id, ((version, f.name(), *del, title), f.region));
            }
        }
    }
    out.into_iter().map(|(id, (e, _))| (id, e)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn full_files_reconcile_whatever_the_arrival_order(
        files in arb_files(),
        order_seed in any::<u64>(),
        cuts in proptest::collection::vec(0usize..14, 0..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("inbox");
        std::fs::create_dir_all(&inbox).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let engine = rt.block_on(embedded_engine(&inbox, &dir.path().join("s.db")));
        let mut arrival: Vec<usize> = (0..files.len()).collect();
        for i in 0..arrival.len() {
            let j = (order_seed.rotate_left(i as u32 * 7) % arrival.len() as u64) as usize;
            arrival.swap(i, j);
        }
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(files.len())).collect();
        cuts.push(files.len());
        cuts.sort();
        let mut from = 0;
        for cut in cuts {
            for &i in &arrival[from..cut] {
                std::fs::write(inbox.join(files[i].name()), files[i].text()).unwrap();
            }
            from = cut;
            rt.block_on(engine.pass(&CancellationToken::new())).unwrap();
        }
        let snapshot = rt.block_on(engine.store.snapshot()).unwrap();
        let applied: BTreeSet<String> =
            snapshot.ledger.iter().filter(|e| e.state == FileState::Applied).map(|e| e.name.clone()).collect();
        let expected = oracle(&files, &applied);
        let lines = rt.block_on(export_lines(engine.store.as_ref()));
        let found: Vec<((String, String), Expected)> = lines
            .iter()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                let day: u32 = v["version"]["date"].as_str().unwrap()[8..].parse().unwrap();
                (
                    (v["type"].as_str().unwrap().to_string(), v["key"].as_str().unwrap().to_string()),
                    (
                        (day, v["version"]["seq"].as_u64().unwrap(), v["version"]["line"].as_u64().unwrap()),
                        v["file"].as_str().unwrap().to_string(),
                        v["deleted"].as_bool().unwrap(),
                        v["fields"]["position_title"].as_str().unwrap_or_default().to_string(),
                    ),
                )
            })
            .collect();
        let expected: Vec<((String, String), Expected)> = expected.into_iter().collect();
        prop_assert_eq!(found, expected);
        // every removal is counted: in the counters and in the full files' ledger entries
        let counts = rt.block_on(engine.store.counts()).unwrap();
        let in_ledger: u64 = snapshot.ledger.iter().map(|e| e.tally.removed).sum();
        prop_assert_eq!(counts.records_removed, in_ledger);
        // the sweeps' lows hold: no live record below its region's and type's low
        let store = rt.block_on(esr_ingest::adapters::sqlite::SqliteStore::open(dir.path().join("s.db"))).unwrap();
        let below_low = rt.block_on(store.records_below_their_low()).unwrap();
        prop_assert_eq!(below_low, 0);
    }
}
