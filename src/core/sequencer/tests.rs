use super::*;
use proptest::prelude::*;

fn stream() -> Stream {
    Stream::new(StreamRecord { region: "SEV".into(), ..Default::default() })
}

fn name(seq: u64) -> String {
    format!("DE_SEV_RMC_20220730_{seq:08}.DAT")
}

/// Runs the stream until it has nothing to do, marking files in `bad` quarantined.
fn drain(s: &mut Stream, bad: &BTreeSet<u64>, log: &mut Vec<Apply>) {
    while let Some(a) = s.next_action() {
        if bad.contains(&a.seq) && !a.late {
            s.quarantined(&a.name, a.seq);
        } else {
            s.applied(&a.name, a.seq);
        }
        log.push(a);
    }
}

#[test]
fn holds_a_later_file_until_the_gap_is_filled() {
    let mut s = stream();
    let mut log = vec![];
    for seq in [5, 6, 8] {
        s.observe(&name(seq), seq, FileState::Pending);
    }
    s.ensure_baseline(None);
    drain(&mut s, &BTreeSet::new(), &mut log);
    assert_eq!(log.iter().map(|a| a.seq).collect::<Vec<_>>(), vec![5, 6]);
    let t0 = Utc::now();
    let rules = SequenceRules { gap_alert_after: TimeDelta::hours(1), ..Default::default() };
    assert!(s.refresh(t0, &rules).is_empty());
    let v = s.view(t0 + TimeDelta::minutes(61), &rules);
    assert_eq!((v.next_seq, v.held.clone(), v.gap_alert), (Some(7), vec![8], true));
    assert_eq!(v.awaiting, Some(Awaiting::Missing(7)));
    assert!(!s.view(t0 + TimeDelta::minutes(59), &rules).gap_alert);
    s.observe(&name(7), 7, FileState::Pending);
    drain(&mut s, &BTreeSet::new(), &mut log);
    assert_eq!(s.next_seq(), Some(9));
    s.refresh(t0, &rules);
    assert_eq!(s.record().waiting_since, None);
}

#[test]
fn configured_start_makes_earlier_files_late() {
    let mut s = stream();
    for seq in [3, 10, 11] {
        s.observe(&name(seq), seq, FileState::Pending);
    }
    s.ensure_baseline(Some(10));
    let mut log = vec![];
    drain(&mut s, &BTreeSet::new(), &mut log);
    assert_eq!(log[0], Apply { name: name(3), seq: 3, late: true });
    assert_eq!(s.next_seq(), Some(12));
}

#[test]
fn quarantine_holds_and_skip_releases() {
    let mut s = stream();
    for seq in [1, 2, 3] {
        s.observe(&name(seq), seq, FileState::Pending);
    }
    s.ensure_baseline(None);
    let mut log = vec![];
    drain(&mut s, &BTreeSet::from([2]), &mut log);
    assert_eq!(s.next_seq(), Some(2));
    assert!(matches!(
        s.view(Utc::now(), &SequenceRules::default()).awaiting,
        Some(Awaiting::Quarantined { seq: 2, .. })
    ));
    assert_eq!(s.skip(2), vec![name(2)]);
    drain(&mut s, &BTreeSet::new(), &mut log);
    assert_eq!(s.next_seq(), Some(4));
}

#[test]
fn automatic_skip_after_the_configured_wait() {
    let mut s = stream();
    for seq in [1, 4] {
        s.observe(&name(seq), seq, FileState::Pending);
    }
    s.ensure_baseline(None);
    drain(&mut s, &BTreeSet::new(), &mut vec![]);
    let rules = SequenceRules { auto_skip_after: Some(TimeDelta::hours(2)), ..Default::default() };
    let t0 = Utc::now();
    assert!(s.refresh(t0, &rules).is_empty());
    assert!(s.refresh(t0 + TimeDelta::hours(1), &rules).is_empty());
    assert_eq!(s.refresh(t0 + TimeDelta::hours(2), &rules), vec![2, 3]);
    assert_eq!(s.next_action().map(|a| a.seq), Some(4));
}

#[test]
fn late_file_never_moves_the_stream_back() {
    let mut s = stream();
    s.observe(&name(2), 2, FileState::Pending);
    s.ensure_baseline(None);
    drain(&mut s, &BTreeSet::new(), &mut vec![]);
    s.observe(&name(1), 1, FileState::Pending);
    let a = s.next_action().unwrap();
    assert!(a.late);
    s.applied(&a.name, a.seq);
    assert_eq!(s.next_seq(), Some(3));
}

proptest! {
    /// For any set of files, any arrival order split into any number of passes, and any
    /// quarantined files: no file is applied while an earlier SEQ (from the baseline) is
    /// neither applied nor skipped; every file at or below the final `next_seq` that is
    /// not quarantined ends up applied; `next_seq` never goes backwards.
    #[test]
    fn applies_in_order_and_never_past_a_gap(
        seqs in proptest::collection::btree_set(1u64..30, 1..15),
        order_seed in any::<u64>(),
        cuts in proptest::collection::vec(0usize..15, 0..4),
        bad in proptest::collection::btree_set(1u64..30, 0..3),
        start in proptest::option::of(1u64..30),
    ) {
        let mut arrival: Vec<u64> = seqs.iter().copied().collect();
        let n = arrival.len();
        for i in 0..n {
            arrival.swap(i, (order_seed.rotate_left(i as u32) % n as u64) as usize);
        }
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(n)).collect();
        cuts.push(n);
        cuts.sort();
        let mut s = stream();
        let mut applied = BTreeSet::new();
        let mut prev_next = 0;
        let mut from = 0;
        let mut baseline = None;
        for cut in cuts {
            for &seq in &arrival[from..cut] {
                s.observe(&name(seq), seq, FileState::Pending);
            }
            from = cut;
            s.ensure_baseline(start);
            baseline = baseline.or(s.next_seq());
            let mut log = vec![];
            drain(&mut s, &bad, &mut log);
            for a in log {
                let b = baseline.unwrap();
                if !a.late {
                    prop_assert!((b..a.seq).all(|x| applied.contains(&x)), "{} applied before an earlier SEQ", a.seq);
                } else {
                    prop_assert!(a.seq < s.next_seq().unwrap());
                }
                if !bad.contains(&a.seq) || a.late {
                    applied.insert(a.seq);
                }
            }
            let next = s.next_seq().unwrap_or(0);
            prop_assert!(next >= prev_next);
            prev_next = next;
        }
        if let Some(next) = s.next_seq() {
            for seq in seqs.iter().filter(|x| **x < next) {
                prop_assert!(applied.contains(seq), "{seq} below next_seq {next} was never applied");
            }
            prop_assert!(!applied.contains(&next));
        }
    }
}

#[test]
fn a_gap_stays_visible_when_later_files_were_backfilled() {
    let mut s = stream();
    s.observe(&name(1), 1, FileState::Pending);
    s.ensure_baseline(None);
    drain(&mut s, &BTreeSet::new(), &mut vec![]);
    s.observe(&name(3), 3, FileState::Applied); // applied by a backfill; 2 never arrived
    s.settle();
    let t0 = Utc::now();
    s.refresh(t0, &SequenceRules::default());
    let v = s.view(t0, &SequenceRules::default());
    assert_eq!((v.next_seq, v.awaiting), (Some(2), Some(Awaiting::Missing(2))));
    assert!(v.waiting_since.is_some());
    s.observe(&name(2), 2, FileState::Pending);
    drain(&mut s, &BTreeSet::new(), &mut vec![]);
    assert_eq!(s.next_seq(), Some(4), "the backfilled SEQ 3 counts as done");
}

#[test]
fn the_gap_clock_restarts_for_each_new_gap() {
    let mut s = stream();
    for seq in [1, 3, 5] {
        s.observe(&name(seq), seq, FileState::Pending);
    }
    s.ensure_baseline(None);
    drain(&mut s, &BTreeSet::new(), &mut vec![]);
    let rules = SequenceRules { gap_alert_after: TimeDelta::hours(1), ..Default::default() };
    let t0 = Utc::now();
    s.refresh(t0, &rules);
    assert_eq!(s.record().waiting_since, Some(t0));
    // SEQ 2 arrives two hours later; the stream moves on and now waits for 4
    s.observe(&name(2), 2, FileState::Pending);
    drain(&mut s, &BTreeSet::new(), &mut vec![]);
    let t1 = t0 + TimeDelta::hours(2);
    s.refresh(t1, &rules);
    let v = s.view(t1, &rules);
    assert_eq!((v.next_seq, v.waiting_since, v.gap_alert), (Some(4), Some(t1), false));
}

#[test]
fn automatic_skip_refuses_a_wide_gap() {
    let mut s = stream();
    for seq in [1, 1 + MAX_AUTO_SKIP + 2] {
        s.observe(&name(seq), seq, FileState::Pending);
    }
    s.ensure_baseline(None);
    drain(&mut s, &BTreeSet::new(), &mut vec![]);
    let rules = SequenceRules { auto_skip_after: Some(TimeDelta::hours(1)), ..Default::default() };
    let t0 = Utc::now();
    s.refresh(t0, &rules);
    let later = t0 + TimeDelta::hours(2);
    assert!(s.refresh(later, &rules).is_empty());
    assert_eq!(s.auto_skip_refused(later, &rules), Some(MAX_AUTO_SKIP + 1));
    assert_eq!(s.next_seq(), Some(2));
}

/// A file that arrives for a SEQ the operator had already skipped, and is quarantined,
/// does not hold the stream: the SEQ stays skipped and the next one is applied at once.
#[test]
fn a_quarantined_file_at_an_already_skipped_seq_does_not_hold_the_stream() {
    let mut s = Stream::new(StreamRecord { region: "SEV".into(), next_seq: Some(4), ..Default::default() });
    s.skip(5);
    for seq in [4, 5, 6] {
        s.observe(&name(seq), seq, FileState::Pending);
    }
    s.settle();
    let mut log = vec![];
    drain(&mut s, &[5].into(), &mut log);
    assert_eq!(log.iter().map(|a| a.seq).collect::<Vec<_>>(), vec![4, 5, 6]);
    assert_eq!(s.next_seq(), Some(7));
}
