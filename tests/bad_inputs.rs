//! The bad-input corpus of `testdata/bad/`: every case of `cases.toml` is one object delivered
//! alone into a fresh sandbox, then `run --once`; its outcome (applied, rejected lines,
//! quarantined, bad name, ignored, not a regular file) must be the one the table expects.
//! Every case is checked and every mismatch is listed, so one run shows them all.

mod common;

use common::*;

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

/// The corpus must stay at least this big.
const MIN_CASES: usize = 60;
/// How long `run --once` may take beside an object that is not a regular file.
const NOT_A_FILE_DEADLINE: Duration = Duration::from_secs(60);
/// Cases checked at the same time (each one runs the binary a few times).
const MAX_WORKERS: usize = 4;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Corpus {
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    id: String,
    what: String,
    name: String,
    file: Option<String>,
    special: Option<Special>,
    expect: Expect,
    reason: Option<String>,
    #[serde(default)]
    rejects: Vec<ExpectedReject>,
    applied: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Special {
    Directory,
    Fifo,
    DanglingLink,
    Empty,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Expect {
    Applied,
    Quarantined,
    BadName,
    Ignored,
    Rejects,
    NotAFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedReject {
    line: u64,
    reason: String,
}

fn corpus_dir() -> PathBuf {
    project_root().join("testdata").join("bad")
}

fn load_cases(dir: &Path) -> Vec<Case> {
    let path = dir.join("cases.toml");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let corpus: Corpus = toml::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
    corpus.case
}

/// The object's name: the last segment of its key.
fn object_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// Region and SEQ of a `DE_<REGION>_<KIND>_<YYYYMMDD>_<SEQ>.DAT` name, if it is one.
fn region_and_seq(name: &str) -> Option<(String, u64)> {
    let stem = object_name(name).strip_suffix(".DAT")?;
    let parts: Vec<&str> = stem.split('_').collect();
    match parts.as_slice() {
        ["DE", region, _kind, _date, seq] if seq.bytes().all(|b| b.is_ascii_digit()) => {
            Some((region.to_string(), seq.parse().ok()?))
        }
        _ => None,
    }
}

/// Mistakes in the table itself (not in the program), so a broken case cannot pass quietly.
fn table_problems(cases: &[Case], dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for case in cases {
        let mut bad = |why: String| problems.push(format!("[{}] table: {why}", case.id));
        if !seen.insert(case.id.as_str()) {
            bad("the id appears more than once".into());
        }
        if case.what.trim().is_empty() {
            bad("`what` is empty".into());
        }
        match (&case.file, case.special) {
            (Some(_), Some(_)) => bad("both `file` and `special` are set".into()),
            (None, None) => bad("neither `file` nor `special` is set".into()),
            (Some(file), None) if !dir.join("files").join(file).is_file() => {
                bad(format!("content file files/{file} does not exist"))
            }
            _ => {}
        }
        let needs_reason = matches!(case.expect, Expect::Quarantined | Expect::BadName);
        if needs_reason != case.reason.is_some() {
            bad(format!("`reason` must be set exactly when expect is quarantined or bad_name ({:?})", case.expect));
        }
        let needs_applied = matches!(case.expect, Expect::Applied | Expect::Rejects);
        if needs_applied != case.applied.is_some() {
            bad(format!("`applied` must be set exactly when expect is applied or rejects ({:?})", case.expect));
        }
        if (case.expect == Expect::Rejects) == case.rejects.is_empty() {
            bad("`rejects` must list the rejected lines exactly when expect is rejects".into());
        }
    }
    let used: std::collections::HashSet<&str> = cases.iter().filter_map(|c| c.file.as_deref()).collect();
    let files = fs::read_dir(dir.join("files")).expect("list testdata/bad/files");
    for entry in files {
        let entry = entry.expect("read an entry of testdata/bad/files");
        let name = entry.file_name().to_string_lossy().into_owned();
        if !used.contains(name.as_str()) {
            problems.push(format!("[table] files/{name} is used by no case"));
        }
    }
    problems
}

fn make_fifo(path: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| format!("fifo path {}: {e}", path.display()))?;
    // SAFETY: `c_path` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) };
    if rc != 0 {
        return Err(format!("mkfifo {}: {}", path.display(), std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Puts the case's object into the sandbox's inbox under its name.
fn place(sb: &Sandbox, case: &Case, dir: &Path) -> Result<(), String> {
    let path = sb.inbox.join(&case.name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    }
    match (case.special, &case.file) {
        (Some(Special::Empty), _) => {
            sb.write_file(&case.name, b"");
        }
        (Some(Special::Directory), _) => {
            fs::create_dir_all(&path).map_err(|e| format!("create folder {}: {e}", path.display()))?;
        }
        (Some(Special::Fifo), _) => make_fifo(&path)?,
        (Some(Special::DanglingLink), _) => {
            let target = sb.dir.path().join("no-such-target.DAT");
            std::os::unix::fs::symlink(&target, &path).map_err(|e| format!("symlink {}: {e}", path.display()))?;
        }
        (None, Some(file)) => {
            let source = dir.join("files").join(file);
            let bytes = fs::read(&source).map_err(|e| format!("read {}: {e}", source.display()))?;
            sb.write_file(&case.name, bytes);
        }
        (None, None) => return Err("the case has neither file nor special".into()),
    }
    Ok(())
}

/// `run --once` that is killed after `deadline`; returns the exit code and stderr.
fn run_once_with_deadline(sb: &Sandbox, deadline: Duration) -> Result<(Option<i32>, String), String> {
    let log = sb.dir.path().join("run-once.stderr");
    let stderr = fs::File::create(&log).expect("create the stderr log of run --once");
    let mut child = sb
        .command(&["run", "--once"])
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn the esr-ingest binary");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("poll the esr-ingest child") {
            let text = fs::read_to_string(&log).unwrap_or_default();
            return Ok((status.code(), text));
        }
        if started.elapsed() >= deadline {
            // Killing may race with a normal exit; either way the child is reaped.
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("`run --once` still running after {deadline:?}: killed"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The parts of `status --json` a mismatch message needs.
fn summary(status: &Value) -> String {
    format!("quarantined: {}; streams: {}; counts: {}", status["quarantined"], status["streams"], status["counts"])
}

fn streams(status: &Value) -> Vec<Value> {
    status["streams"].as_array().cloned().unwrap_or_else(|| panic!("streams is not an array:\n{status:#}"))
}

fn rejects_summary(rejects: &[Value]) -> String {
    let lines: Vec<String> =
        rejects.iter().map(|r| format!("line {} {}: {}", r["line"], r["file"], r["reason"])).collect();
    format!("[{}]", lines.join("; "))
}

/// Adds a problem when `counts.<key>` of `status` is not `want`.
fn expect_count(problems: &mut Vec<String>, status: &Value, key: &str, want: u64) {
    let got = count(status, key);
    if got != want {
        problems.push(format!("counts.{key} is {got}, expected {want}; {}", summary(status)));
    }
}

/// Checks one case; returns what differs from the table.
fn check_case(case: &Case, dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let sb = Sandbox::new();
    if let Err(why) = place(&sb, case, dir) {
        return vec![format!("could not place the object: {why}")];
    }
    if case.expect == Expect::NotAFile {
        check_not_a_file(&sb, case.special == Some(Special::Directory), &mut problems);
        return problems;
    }

    let out = sb.run(&["run", "--once"]);
    if out.status.code() != Some(0) {
        problems.push(format!("`run --once` did not exit 0\n{}", describe(&out)));
    }
    if String::from_utf8_lossy(&out.stderr).contains("panicked") {
        problems.push(format!("`run --once` panicked\n{}", describe(&out)));
    }

    let status = sb.status_json();
    let file = object_name(&case.name);
    let reason = quarantine_reason(&status, file);
    let stream_list = streams(&status);
    let next_seq_of =
        |region: &str| stream_list.iter().find(|s| s["region"] == region).and_then(|s| s["next_seq"].as_u64());

    match case.expect {
        Expect::Applied | Expect::Rejects => {
            expect_count(&mut problems, &status, "applied_files", 1);
            expect_count(&mut problems, &status, "records_applied", case.applied.unwrap_or_default());
            expect_count(&mut problems, &status, "records_rejected", case.rejects.len() as u64);
            if let Some(reason) = &reason {
                problems.push(format!("quarantined ({reason}), expected {:?}", case.expect));
            }
            if let Some((region, seq)) = region_and_seq(&case.name)
                && next_seq_of(region.as_str()) != Some(seq + 1)
            {
                problems.push(format!("next_seq of {region} should be {}; {}", seq + 1, summary(&status)));
            }
            check_rejects(&sb, case, file, &mut problems);
        }
        Expect::Quarantined => {
            let want = case.reason.as_deref().unwrap_or_default();
            match &reason {
                None => {
                    problems.push(format!("not quarantined (expected a reason with {want:?}); {}", summary(&status)))
                }
                Some(got) if got.starts_with("bad name:") || !got.contains(want) => {
                    problems.push(format!("quarantine reason {got:?} should contain {want:?} (and not be a bad name)"))
                }
                Some(_) => {}
            }
            expect_count(&mut problems, &status, "applied_files", 0);
            expect_count(&mut problems, &status, "records_applied", 0);
            if let Some((region, seq)) = region_and_seq(&case.name)
                && next_seq_of(region.as_str()) != Some(seq)
            {
                problems.push(format!("the {region} stream should be held at {seq}; {}", summary(&status)));
            }
        }
        Expect::BadName => {
            let want = case.reason.as_deref().unwrap_or_default();
            match &reason {
                None => problems.push(format!("not quarantined (expected a bad name); {}", summary(&status))),
                Some(got) if !got.starts_with("bad name:") || !got.contains(want) => {
                    problems.push(format!("reason {got:?} should start with \"bad name:\" and contain {want:?}"))
                }
                Some(_) => {}
            }
            expect_count(&mut problems, &status, "applied_files", 0);
            expect_count(&mut problems, &status, "records_applied", 0);
            if !stream_list.is_empty() {
                problems.push(format!("a bad name belongs to no stream; {}", summary(&status)));
            }
        }
        Expect::Ignored => {
            if !quarantined_files(&status).is_empty() {
                problems.push(format!("ignored objects are never quarantined; {}", summary(&status)));
            }
            if !stream_list.is_empty() {
                problems.push(format!("an ignored object makes no stream; {}", summary(&status)));
            }
            expect_count(&mut problems, &status, "applied_files", 0);
            expect_count(&mut problems, &status, "records_applied", 0);
        }
        Expect::NotAFile => unreachable!("handled above"),
    }
    problems
}

/// Compares `rejects --json` with the case's rejected lines (none for an applied case).
fn check_rejects(sb: &Sandbox, case: &Case, file: &str, problems: &mut Vec<String>) {
    let mut actual = sb.rejects_json(&[]);
    actual.sort_by_key(|r| r["line"].as_u64());
    let matches = actual.len() == case.rejects.len()
        && actual.iter().zip(&case.rejects).all(|(got, want)| {
            got["file"] == file
                && got["line"].as_u64() == Some(want.line)
                && got["reason"].as_str().is_some_and(|reason| reason.contains(&want.reason))
        });
    if !matches {
        let wanted: Vec<String> = case.rejects.iter().map(|r| format!("line {} {:?}", r.line, r.reason)).collect();
        problems.push(format!(
            "rejects differ: expected [{}] in {file}, got {}",
            wanted.join("; "),
            rejects_summary(&actual)
        ));
    }
}

/// An object that is not a regular file affects itself alone: the run ends, nothing
/// panics, and another region's valid file is applied.
fn check_not_a_file(sb: &Sandbox, is_folder: bool, problems: &mut Vec<String>) {
    let other = sb.deliver(&esr_file("WES", "RMC", "20220730", 1, &[por(1, "C", "beside a non-file")]));
    match run_once_with_deadline(sb, NOT_A_FILE_DEADLINE) {
        Err(why) => {
            problems.push(why);
            return;
        }
        Ok((code, stderr)) => {
            if !matches!(code, Some(0 | 1)) {
                problems.push(format!("`run --once` exited with {code:?}, expected 0 or 1\n{stderr}"));
            }
            if stderr.contains("panicked") {
                problems.push(format!("`run --once` panicked\n{stderr}"));
            }
        }
    }
    let status = sb.status_json();
    if let Some(reason) = quarantine_reason(&status, &other) {
        problems.push(format!("the WES file beside it was quarantined: {reason}"));
    }
    // The object itself is visible: quarantined with the reason it cannot be read. (A
    // folder is not an object: it is walked, as an S3 prefix is listed.)
    let problem = status["quarantined"]
        .as_array()
        .and_then(|q| q.iter().find(|e| e["reason"].as_str().is_some_and(|r| r.starts_with("unreadable object:"))));
    if problem.is_none() && !is_folder {
        problems.push(format!("the object is not quarantined as unreadable; {}", summary(&status)));
    }
    let wes_next = streams(&status).iter().find(|s| s["region"] == "WES").and_then(|s| s["next_seq"].as_u64());
    if wes_next != Some(2) || count(&status, "records_applied") != 1 {
        problems.push(format!("the WES file beside it should be applied (WES next_seq 2); {}", summary(&status)));
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs one case; a panic inside a helper becomes one more problem of that case.
fn run_case(case: &Case, dir: &Path) -> Vec<String> {
    panic::catch_unwind(AssertUnwindSafe(|| check_case(case, dir)))
        .unwrap_or_else(|payload| vec![format!("panicked: {}", panic_text(payload.as_ref()))])
}

#[test]
fn every_bad_input_has_its_expected_outcome() {
    let dir = corpus_dir();
    let cases = load_cases(&dir);
    assert!(
        cases.len() >= MIN_CASES,
        "testdata/bad/cases.toml has {} cases, at least {MIN_CASES} expected",
        cases.len()
    );

    let mut failures = table_problems(&cases, &dir);
    let next = AtomicUsize::new(0);
    let found = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, MAX_WORKERS);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(case) = cases.get(index) else { break };
                    let problems = run_case(case, &dir);
                    if !problems.is_empty() {
                        found.lock().expect("the failure list is never poisoned").push((index, problems));
                    }
                }
            });
        }
    });
    let mut found = found.into_inner().expect("the failure list is never poisoned");
    found.sort_by_key(|(index, _)| *index);
    for (index, problems) in found {
        let case = &cases[index];
        let listed: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
        failures.push(format!(
            "[{}] {} (name {:?}, expect {:?})\n{}",
            case.id,
            case.what,
            case.name,
            case.expect,
            listed.join("\n")
        ));
    }
    assert!(
        failures.is_empty(),
        "{} problem(s) with the {} cases of testdata/bad/cases.toml:\n\n{}\n",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
