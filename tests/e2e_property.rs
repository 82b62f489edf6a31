//! End-to-end invariants through the real engine, folder source and SQLite store:
//! for any set of files and any arrival order split into any number of `run --once`
//! passes, the final export equals "greatest version per identity" over the applied
//! files, and no file is applied while an earlier SEQ of its stream is neither applied
//! nor skipped.
//!
//! Keys are shared between the two regions, so two files of different regions can
//! write one identity at an equal version (same date, SEQ and line). The contract makes
//! an equal version a no-op, so the first of them to be applied stays: the model accepts
//! any tied line of the earliest pass that applied one, and nothing else.

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
    bad: bool,
    /// (is_pos, key, delete, title)
    records: Vec<(bool, u64, bool, u8)>,
}

impl GenFile {
    fn name(&self) -> String {
        format!("DE_{}_RMC_202207{:02}_{:08}.DAT", self.region, self.day, self.seq)
    }
    fn text(&self) -> String {
        let lines: Vec<String> = self
            .records
            .iter()
            .map(|(is_pos, key, del, title)| {
                let ind = if *del { "D" } else { "C" };
                let title = format!("T{title}");
                if *is_pos { pos(*key, ind, &title) } else { por(*key, ind, &title) }
            })
            .collect();
        let text = file_text(self.region, "RMC", &format!("202207{:02}", self.day), self.seq, &lines);
        if self.bad { text.replace(&format!("TRL,{}", lines.len()), &format!("TRL,{}", lines.len() + 1)) } else { text }
    }
}

fn arb_files() -> impl Strategy<Value = Vec<GenFile>> {
    let record = (any::<bool>(), 1u64..6, proptest::bool::weighted(0.15), any::<u8>());
    let file = (
        prop_oneof![Just("SEV"), Just("WES")],
        1u64..9,
        1u32..29,
        proptest::bool::weighted(0.1),
        proptest::collection::vec(record, 1..6),
    )
        .prop_map(|(region, seq, day, bad, records)| GenFile { region, seq, day, bad, records });
    proptest::collection::vec(file, 1..14).prop_map(|files| {
        // one file per (region, seq)
        let mut seen = BTreeSet::new();
        files.into_iter().filter(|f| seen.insert((f.region, f.seq))).collect()
    })
}

/// One line the export may show for an identity: (version (day, seq, line), file, deleted, title).
type Candidate = ((u32, u64, u64), String, bool, String);

/// Greatest version per identity over the applied files: (type, key) -> the lines the
/// export may show. Lines of equal greatest version tie; only those of the earliest pass
/// that applied one can have been written first, since a pass applies nothing before the
/// passes before it.
fn model(files: &[GenFile], applied_in_pass: &BTreeMap<String, usize>) -> BTreeMap<(String, String), Vec<Candidate>> {
    let mut out: BTreeMap<(String, String), (usize, Vec<Candidate>)> = BTreeMap::new();
    for f in files {
        let Some(&pass) = applied_in_pass.get(&f.name()) else { continue };
        for (i, (is_pos, key, del, title)) in f.records.iter().enumerate() {
            let version = (f.day, f.seq, i as u64 + 2); // the header is line 1
            let id = ((if *is_pos { "POS" } else { "POR" }).to_string(), key.to_string());
            let line = (version, f.name(), *del, format!("T{title}"));
            let slot = out.entry(id).or_insert_with(|| (pass, Vec::new()));
            match slot.1.first().map(|(v, ..)| version.cmp(v)) {
                None | Some(std::cmp::Ordering::Greater) => *slot = (pass, vec![line]),
                Some(std::cmp::Ordering::Equal) if pass < slot.0 => *slot = (pass, vec![line]),
                Some(std::cmp::Ordering::Equal) if pass == slot.0 => slot.1.push(line),
                Some(_) => {}
            }
        }
    }
    out.into_iter().map(|(id, (_, lines))| (id, lines)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn export_is_the_greatest_version_of_applied_files_and_order_holds(
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
        let mut baseline: BTreeMap<&str, u64> = BTreeMap::new();
        let mut applied_seqs: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
        let mut applied_in_pass: BTreeMap<String, usize> = BTreeMap::new();
        for (pass, cut) in cuts.into_iter().enumerate() {
            let arriving: Vec<&GenFile> = arrival[from..cut].iter().map(|&i| &files[i]).collect();
            from = cut;
            // A region's baseline is the lowest SEQ of the first pass that saw it.
            let mut first_seen: BTreeMap<&str, u64> = BTreeMap::new();
            for f in &arriving {
                std::fs::write(inbox.join(f.name()), f.text()).unwrap();
                if !baseline.contains_key(f.region) {
                    let lowest = first_seen.entry(f.region).or_insert(f.seq);
                    *lowest = (*lowest).min(f.seq);
                }
            }
            baseline.extend(first_seen);
            let report = rt.block_on(engine.pass(&CancellationToken::new())).unwrap();
            for name in &report.applied {
                let f = files.iter().find(|f| &f.name() == name).unwrap();
                let b = baseline[f.region];
                let done = applied_seqs.entry(f.region).or_default();
                if f.seq >= b {
                    prop_assert!((b..f.seq).all(|s| done.contains(&s)), "{name} applied before an earlier SEQ (baseline {b}, applied {done:?})");
                }
                done.insert(f.seq);
                applied_in_pass.entry(name.clone()).or_insert(pass);
            }
        }
        let snapshot = rt.block_on(engine.store.snapshot()).unwrap();
        let applied: BTreeSet<String> =
            snapshot.ledger.iter().filter(|e| e.state == FileState::Applied).map(|e| e.name.clone()).collect();
        for f in files.iter().filter(|f| f.bad) {
            prop_assert!(!applied.contains(&f.name()), "a faulty file was applied");
        }
        prop_assert_eq!(applied_in_pass.keys().cloned().collect::<BTreeSet<_>>(), applied.clone());
        let expected = model(&files, &applied_in_pass);
        let lines = rt.block_on(export_lines(engine.store.as_ref()));
        prop_assert_eq!(lines.len(), expected.len());
        for (line, ((rtype, key), candidates)) in lines.iter().zip(&expected) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            prop_assert_eq!(v["type"].as_str(), Some(rtype.as_str()));
            prop_assert_eq!(v["key"].as_str(), Some(key.as_str()));
            let shown = candidates.iter().find(|(_, file, ..)| v["file"].as_str() == Some(file.as_str()));
            let Some((version, _, deleted, title)) = shown else {
                return Err(TestCaseError::fail(format!("{rtype} {key}: {line} is none of {candidates:?}")));
            };
            prop_assert_eq!(v["deleted"].as_bool(), Some(*deleted));
            prop_assert_eq!(v["version"]["seq"].as_u64(), Some(version.1));
            prop_assert_eq!(v["version"]["line"].as_u64(), Some(version.2));
            if !deleted {
                prop_assert_eq!(v["fields"]["position_title"].as_str(), Some(title.as_str()));
            } else {
                prop_assert!(v.get("fields").is_none());
            }
        }
    }
}
