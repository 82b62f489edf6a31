//! Memory does not follow input: pathological files (blank-line floods, a quote that never
//! closes, one huge line without a line end) are processed with a peak RSS far below their
//! size. The 1 GiB versions are measured by `scripts/bench-pathological.sh`; here 48 MiB
//! inputs keep the test quick while still dwarfing the bound.

mod common;

use common::*;
use std::io::Write;

/// The bound the contract promises for any input.
const PEAK_RSS_LIMIT_KIB: i64 = 150 * 1024;
const SIZE: usize = 48 << 20;

/// Writes a file of `SIZE` bytes: `head`, then `filler` repeated, then `tail`.
fn write_big(sb: &Sandbox, name: &str, head: &str, filler: &[u8], tail: &str) {
    let path = sb.inbox.join(name);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).expect("create a big file"));
    out.write_all(head.as_bytes()).expect("write");
    let chunk = filler.repeat((1 << 20) / filler.len());
    for _ in 0..SIZE / chunk.len() {
        out.write_all(&chunk).expect("write");
    }
    out.write_all(tail.as_bytes()).expect("write");
}

/// Peak RSS (KiB) of one `run --once` child, read from the kernel's accounting.
fn peak_rss_of_run_once(sb: &Sandbox) -> i64 {
    let before = children_max_rss();
    let out = sb.run(&["run", "--once"]);
    assert!(out.status.code().is_some_and(|c| c <= 1), "{}", describe(&out));
    let after = children_max_rss();
    assert!(after >= before);
    after
}

fn children_max_rss() -> i64 {
    // SAFETY: getrusage only writes into the struct it is given.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage), 0);
        usage.ru_maxrss
    }
}

#[test]
fn pathological_files_stay_within_the_memory_bound_and_are_told_apart() {
    let head = format!("{}\n{}\n", header("RMC", "SEV", "20220730", 1), por(1, "C", "before the flood"));
    let sb = Sandbox::new();
    // A valid file with a flood of blank lines between two records.
    write_big(&sb, &esr_name("SEV", "RMC", "20220730", 1), &head, b"\n", &format!("{}\nTRL,2\n", por(2, "C", "after")));
    // A quote that opens and runs to the end of the file.
    let wes = format!("{}\nPOR,1,,C,1,\"open", header("RMC", "WES", "20220730", 1));
    write_big(&sb, &esr_name("WES", "RMC", "20220730", 1), &wes, b"x\n", "");
    // One huge line without a line end.
    let lon = format!("{}\n", header("RMC", "LDN", "20220730", 1));
    write_big(&sb, &esr_name("LDN", "RMC", "20220730", 1), &lon, b"y", "");
    // Blank lines and stray CRs only.
    write_big(&sb, &esr_name("YHD", "RMC", "20220730", 1), "", b"\r\n", "");

    let peak = peak_rss_of_run_once(&sb);
    assert!(peak < PEAK_RSS_LIMIT_KIB, "peak RSS {peak} KiB for 4 x {SIZE} bytes of pathological input");

    let status = sb.status_json();
    assert_eq!(count(&status, "records_applied"), 2, "{status:#}");
    let line = SIZE as u64 + 3;
    let export = sb.export_lines();
    assert_eq!(record(&export, "POR", "2")["version"]["line"], line, "blank lines count: {export:#?}");
    let reason = |file: &str| quarantine_reason(&status, file).unwrap_or_else(|| panic!("{file}: {status:#}"));
    assert!(
        reason(&esr_name("WES", "RMC", "20220730", 1)).contains("never closed")
            || reason(&esr_name("WES", "RMC", "20220730", 1)).contains("longer than")
    );
    assert!(reason(&esr_name("LDN", "RMC", "20220730", 1)).contains("line 2: longer than"));
    assert!(reason(&esr_name("YHD", "RMC", "20220730", 1)).contains("missing header"));
}

/// A backlog of wide records (two 240-character fields of 3-byte characters, about 1.5 KB
/// a line) goes into the store several files at a time, and the lines a unit holds back
/// until its commit stay within the bound: 20 files of 4,000 distinct identities each,
/// 80,000 lines, about 120 MB of input.
#[test]
fn a_backlog_of_wide_records_stays_within_the_memory_bound() {
    let sb = Sandbox::new();
    let wide: String = "€".repeat(240);
    for day in 0..20u32 {
        let date = format!("202208{:02}", day + 1);
        let lines: Vec<String> = (0..4_000u64)
            .map(|i| {
                let mut fields = por_fields(&(u64::from(day) * 10_000 + i).to_string(), "C", "wide");
                fields[11] = wide.clone();
                fields[12] = wide.clone();
                fields.join(",")
            })
            .collect();
        let (name, text) = esr_file("SEV", "RMC", &date, 100 + day, &lines);
        assert!(text.len() < 8 << 20, "each file goes into a unit");
        sb.write_file(&name, text);
    }
    let peak = peak_rss_of_run_once(&sb);
    let status = sb.status_json();
    assert_eq!(count(&status, "applied_files"), 20, "{status:#}");
    assert_eq!(count(&status, "records_applied"), 80_000, "{status:#}");
    assert!(peak < PEAK_RSS_LIMIT_KIB, "peak RSS {} MiB is over the bound", peak / 1024);
}
