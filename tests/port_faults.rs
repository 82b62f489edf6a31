//! Faults injected at every port of the real binary (`ESR_INGEST_FAULTS`, see
//! `adapters::unreliable`): calls that fail before they take effect, calls that take
//! effect and lose their reply, delays. Whatever the faults did, a clean run afterwards
//! leaves exactly the state and the counters of a run without faults.

mod common;

use common::*;

const FILES: [(&str, u32); 6] = [("SEV", 1), ("SEV", 2), ("SEV", 3), ("WES", 7), ("WES", 8), ("YHD", 1)];

fn deliver_all(sb: &Sandbox) -> Vec<String> {
    FILES
        .iter()
        .map(|(region, seq)| {
            let date = format!("202207{:02}", 10 + seq);
            // Ids differ across regions: equal versions in two regions would tie.
            let id = 100 * (region.as_bytes()[0] as u64) + u64::from(*seq);
            let records = [por(id, "C", &format!("{region} {seq}")), pos(id, "C", "x")];
            sb.deliver(&esr_file(region, "RMC", &date, *seq, &records))
        })
        .collect()
}

fn faulty_run(sb: &Sandbox, faults: &str) {
    let out = sb.command(&["run", "--once"]).env("ESR_INGEST_FAULTS", faults).output().expect("spawn");
    assert!(matches!(out.status.code(), Some(0 | 1)), "with faults {faults}:\n{}", describe(&out));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{}", describe(&out));
}

/// The reference: the same files, no faults.
fn reference() -> (String, serde_json::Value) {
    let sb = Sandbox::new();
    deliver_all(&sb);
    sb.run_once();
    (sb.export_text(), sb.status_json()["counts"].clone())
}

#[test]
fn writes_whose_reply_was_lost_are_counted_once() {
    let (export, counts) = reference();
    for seed in 1..=4 {
        let sb = Sandbox::new();
        let names = deliver_all(&sb);
        faulty_run(&sb, &format!("seed={seed},rate=0.3,kinds=after"));
        sb.run_once();
        assert!(sb.export_text() == export, "seed {seed}: the export differs from the run without faults");
        assert_eq!(sb.status_json()["counts"], counts, "seed {seed}");
        // Every file uploaded again unchanged: duplicates, counted once each.
        for name in &names {
            sb.touch_newer(name);
        }
        faulty_run(&sb, &format!("seed={seed},rate=0.3,kinds=after"));
        sb.run_once();
        let status = sb.status_json();
        assert_eq!(count(&status, "duplicate_files"), FILES.len() as u64, "seed {seed}: {status:#}");
        assert_eq!(count(&status, "applied_files"), FILES.len() as u64, "seed {seed}: {status:#}");
    }
}

#[test]
fn any_mix_of_faults_then_a_clean_run_equals_a_run_without_faults() {
    let (export, counts) = reference();
    for seed in 1..=4 {
        let sb = Sandbox::new();
        deliver_all(&sb);
        for round in 0..3 {
            faulty_run(&sb, &format!("seed={},rate=0.3,kinds=before+after+delay", seed * 10 + round));
        }
        sb.run_once();
        assert!(sb.export_text() == export, "seed {seed}: the export differs from the run without faults");
        assert_eq!(sb.status_json()["counts"], counts, "seed {seed}");
    }
}
