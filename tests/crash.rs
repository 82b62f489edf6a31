//! Crash safety: SIGKILL the long-running service at many pseudo-random moments,
//! restart it each time, and require the final state to equal that of one
//! uninterrupted run, byte for byte.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread::sleep;
use std::time::Duration;

use common::*;

/// How many times the service is killed.
const KILLS: usize = 24;
/// Delays before each kill are drawn from this range, in milliseconds.
const MIN_DELAY_MS: u64 = 20;
const MAX_DELAY_MS: u64 = 400;

const SERVICE_CONFIG: &str = "poll_interval = \"50ms\"\n\n[health]\nlisten = \"127.0.0.1:0\"\n";

/// xorshift64: deterministic kill moments without extra dependencies.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn delay(&mut self) -> Duration {
        Duration::from_millis(MIN_DELAY_MS + self.next() % (MAX_DELAY_MS - MIN_DELAY_MS + 1))
    }
}

/// Files under `root` (recursively), relative to it; names starting with `.` skipped.
fn data_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).expect("list the generated data") {
            let path = entry.expect("read a directory entry").path();
            let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if hidden {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else {
                let rel = path.strip_prefix(root).expect("path under root");
                found.push(rel.to_path_buf());
            }
        }
    }
    found.sort();
    found
}

fn copy_files(files: &[PathBuf], from: &Path, to: &Path) {
    for rel in files {
        let target = to.join(rel);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).expect("create an inbox folder");
        }
        fs::copy(from.join(rel), &target).expect("copy a generated file");
    }
}

/// The last lines of the service log, for failure messages.
fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(40);
    format!("--- last service log lines ---\n{}", lines[start..].join("\n"))
}

/// Where two exports first differ, without dumping megabytes.
fn first_difference(expected: &[u8], actual: &[u8]) -> String {
    let expected = String::from_utf8_lossy(expected);
    let actual = String::from_utf8_lossy(actual);
    let (mut want, mut got) = (expected.lines(), actual.lines());
    let mut number = 1;
    loop {
        match (want.next(), got.next()) {
            (None, None) => return "same lines, different bytes (line ends?)".into(),
            (w, g) if w != g => {
                return format!(
                    "first difference at line {number}:\n  reference: {}\n  after crashes: {}",
                    w.unwrap_or("<end of export>"),
                    g.unwrap_or("<end of export>")
                );
            }
            _ => number += 1,
        }
    }
}

#[test]
fn sigkill_at_random_moments_converges_to_the_uninterrupted_result() {
    let data = tempfile::tempdir().expect("temp dir for generated data");
    let data_arg = data.path().to_str().expect("temp paths are UTF-8");
    Sandbox::new().run_ok(&[
        "generate",
        "--out",
        data_arg,
        "--regions",
        "SEV,WES,WMD",
        "--days",
        "8",
        "--records",
        "3000",
        "--seed",
        "7",
    ]);
    let files = data_files(data.path());
    assert!(!files.is_empty(), "generate wrote no files");
    let file_count = files.len() as u64;

    // Reference: one uninterrupted pass.
    let reference = Sandbox::new();
    copy_files(&files, data.path(), &reference.inbox);
    reference.run_once();
    let status = reference.status_json();
    assert_eq!(
        count(&status, "applied_files"),
        file_count,
        "an uninterrupted run applies every generated file:\n{status:#}"
    );
    assert!(quarantined_files(&status).is_empty(), "{status:#}");
    let expected = reference.export_raw();
    assert!(!expected.is_empty(), "the reference export is empty");

    // Crash run: the long-running service, killed and restarted again and again.
    let crash = Sandbox::with_config(SERVICE_CONFIG);
    copy_files(&files, data.path(), &crash.inbox);
    let log_path = crash.dir.path().join("service.log");
    let mut rng = XorShift(0x5EED_0007_C0FF_EE42);
    for round in 1..=KILLS {
        let delay = rng.delay();
        let log = fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("open the service log");
        let mut child =
            crash.command(&["run"]).stdout(Stdio::null()).stderr(log).spawn().expect("spawn `esr-ingest run`");
        sleep(delay);
        if let Some(exit) = child.try_wait().expect("poll the service") {
            panic!(
                "round {round}: `run` stopped by itself ({exit}) within {delay:?}; \
                 it must keep running\n{}",
                log_tail(&log_path)
            );
        }
        child.kill().expect("SIGKILL the service");
        child.wait().expect("reap the killed service");
    }

    let status = crash.status_json();
    assert!(
        count(&status, "applied_files") > 0,
        "the killed services never applied a file, so no kill hit work in progress:\n\
         {status:#}\n{}",
        log_tail(&log_path)
    );

    // Finish what is left and compare with the reference.
    crash.run_once();
    let status = crash.status_json();
    assert_eq!(
        count(&status, "applied_files"),
        file_count,
        "every file applied exactly once despite the kills:\n{status:#}"
    );
    assert!(quarantined_files(&status).is_empty(), "{status:#}");
    let actual = crash.export_raw();
    assert!(
        actual == expected,
        "export after {KILLS} kills differs from the reference ({} vs {} bytes); {}",
        actual.len(),
        expected.len(),
        first_difference(&expected, &actual)
    );
}
