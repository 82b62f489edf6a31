//! A pass, `status` and the page read only the active ledger (`Store::active`): every
//! entry that `LedgerEntry::is_settled` does not call settled. This property test checks
//! the claim that makes that safe: for any ledger and stored streams, the streams built
//! from the active entries decide exactly what the streams built from the whole ledger
//! decide — the next file to apply, the expected SEQ, held files, gaps, skips and the
//! automatic skip — before and after applying, quarantining and skipping.

use chrono::{NaiveDate, TimeZone, Utc};
use esr_ingest::core::ledger::{Conflict, FileState, LedgerEntry};
use esr_ingest::core::name::FileName;
use esr_ingest::core::record::Tally;
use esr_ingest::core::sequencer::{SequenceRules, Stream, StreamRecord};
use esr_ingest::engine::streams::build_streams;
use proptest::prelude::*;
use std::collections::BTreeMap;

const REGIONS: [&str; 2] = ["SEV", "WES"];

fn state() -> impl Strategy<Value = FileState> {
    prop_oneof![
        1 => Just(FileState::Pending),
        3 => Just(FileState::Applied),
        1 => Just(FileState::Delivered),
        1 => Just(FileState::Quarantined),
        1 => Just(FileState::Skipped),
    ]
}

/// (region index, seq, copy, state, has sha, in conflict)
fn entries() -> impl Strategy<Value = Vec<(usize, u64, u8, FileState, bool, bool)>> {
    prop::collection::vec((0..2usize, 1..30u64, 0..2u8, state(), any::<bool>(), prop::bool::weighted(0.1)), 0..60)
}

fn entry((region, seq, copy, state, sha, conflict): (usize, u64, u8, FileState, bool, bool)) -> LedgerEntry {
    let region = REGIONS[region];
    let name = format!("DE_{region}_RMC_2022{:02}01_{seq:08}.DAT", 7 + copy);
    let t = Utc.with_ymd_and_hms(2022, 8, 1, 0, 0, 0).unwrap() + chrono::Duration::minutes(seq as i64);
    LedgerEntry {
        batch: Some(FileName {
            name: name.clone(),
            region: region.into(),
            kind: "RMC".into(),
            date: NaiveDate::from_ymd_opt(2022, 7 + u32::from(copy), 1).unwrap(),
            seq,
        }),
        key: name.clone(),
        name,
        size: 1,
        fingerprint: "fp".into(),
        sha256: sha.then(|| "ab".repeat(32)),
        state,
        reason: None,
        conflict: conflict.then(|| Conflict {
            fingerprint: "x".into(),
            sha256: "y".into(),
            reason: "conflict".into(),
            at: t,
        }),
        first_seen: t,
        updated_at: t,
        record_lines: 1,
        tally: Tally::default(),
        generation: 1,
        counted: state == FileState::Applied,
    }
}

/// Everything a stream decides, after `settle`, at a fixed time.
fn decisions(stream: &Stream) -> impl PartialEq + std::fmt::Debug {
    let now = Utc.with_ymd_and_hms(2022, 9, 1, 0, 0, 0).unwrap();
    let rules = SequenceRules { auto_skip_after: Some(chrono::Duration::hours(1)), ..Default::default() };
    let mut s = stream.clone();
    let first = (s.next_action(), s.view(now, &rules), s.record().clone());
    let auto = s.refresh(now, &rules);
    let refused = s.auto_skip_refused(now, &rules);
    (first, auto, refused, s.next_action(), s.view(now + chrono::Duration::hours(2), &rules), s.record().clone())
}

fn compare(whole: &BTreeMap<String, Stream>, active: &BTreeMap<String, Stream>) -> Result<(), TestCaseError> {
    prop_assert_eq!(whole.keys().collect::<Vec<_>>(), active.keys().collect::<Vec<_>>());
    for (region, w) in whole {
        prop_assert_eq!(decisions(w), decisions(&active[region]), "region {}", region);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn streams_from_the_active_ledger_decide_as_from_the_whole_ledger(
        raw in entries(),
        next in prop::collection::vec(prop::option::of(1..32u64), 2),
        has_record in prop::collection::vec(any::<bool>(), 2),
        skipped in prop::collection::vec(1..30u64, 0..4),
        ops in prop::collection::vec((0..2usize, 1..32u64, 0..3u8), 0..6),
    ) {
        let mut by_name = BTreeMap::new();
        for e in raw.into_iter().map(entry) {
            by_name.insert(e.name.clone(), e);
        }
        let ledger: Vec<LedgerEntry> = by_name.into_values().collect();
        let records: Vec<StreamRecord> = (0..2)
            .filter(|i| has_record[*i])
            .map(|i| StreamRecord {
                region: REGIONS[i].into(),
                next_seq: next[i],
                waiting_since: None,
                skipped: if i == 0 { skipped.iter().copied().collect() } else { Default::default() },
            })
            .collect();
        let next_of = |region: Option<&str>| records.iter().find(|r| Some(r.region.as_str()) == region).and_then(|r| r.next_seq);
        let active: Vec<&LedgerEntry> = ledger.iter().filter(|e| !e.is_settled(next_of(e.region()))).collect();
        let mut whole = build_streams(&ledger, &records, None);
        let mut part = build_streams(active.iter().copied(), &records, None);
        compare(&whole, &part)?;
        // The same operations on both sides keep them in step.
        for (region, seq, op) in ops {
            let region = REGIONS[region];
            for streams in [&mut whole, &mut part] {
                let Some(s) = streams.get_mut(region) else { continue };
                let name = format!("DE_{region}_RMC_20220701_{seq:08}.DAT");
                match op {
                    0 => s.applied(&name, seq),
                    1 => s.quarantined(&name, seq),
                    _ => {
                        s.skip(seq);
                    }
                }
            }
            compare(&whole, &part)?;
        }
    }
}
