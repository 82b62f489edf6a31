//! Helpers shared by the command-line integration tests.
//!
//! Every test gets its own [`Sandbox`]: a temp dir holding an `inbox/` folder (the
//! source), a SQLite store and, optionally, a config file. The binary is only ever
//! driven through its command line, exactly as an operator or a script would.

#![allow(dead_code)]

pub mod broker;
pub mod engine;
pub mod fuzz_checks;
pub mod history;
pub mod service;
pub mod webhook;

use std::cell::Cell;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::Value;

/// A child process killed (and reaped) when dropped, so a test that fails half-way
/// leaves no process behind.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary under test: the one cargo built for the integration tests, or
/// `ESR_INGEST_TEST_BIN` (the soak script runs a copy, so a rebuild cannot pull the
/// binary from under a running soak).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| std::env::var("ESR_INGEST_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_esr-ingest").into()))
}

/// The project's root, read when the test runs (cargo and nextest set it): a test binary
/// reused from a build in another checkout must not read that checkout's files.
pub fn project_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// One isolated installation: inbox folder, store file and optional config.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub inbox: PathBuf,
    pub store: PathBuf,
    pub config: Option<PathBuf>,
    /// Modification time given to the next written or touched file. It only moves
    /// forward (in 10 s steps, starting two hours in the past), so a re-delivery is
    /// always strictly newer than the upload before it, with no same-second ties.
    clock: Cell<SystemTime>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("create a temp dir for the sandbox");
        let inbox = dir.path().join("inbox");
        fs::create_dir_all(&inbox).expect("create the inbox folder");
        let store = dir.path().join("state.db");
        let start = SystemTime::now() - Duration::from_secs(2 * 3600);
        Sandbox { dir, inbox, store, config: None, clock: Cell::new(start) }
    }

    /// A sandbox whose runs all get `--config FILE` with this TOML text.
    pub fn with_config(toml: &str) -> Self {
        let mut sandbox = Self::new();
        let path = sandbox.dir.path().join("esr-ingest-test.toml");
        fs::write(&path, toml).expect("write the test config file");
        sandbox.config = Some(path);
        sandbox
    }

    /// The binary with this sandbox's global flags, ready for more settings.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.arg("--source").arg(&self.inbox);
        cmd.arg("--store").arg(&self.store);
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        cmd.args(args).current_dir(self.dir.path()).env_remove("ESR_INGEST_CONFIG").stdin(Stdio::null());
        cmd
    }

    /// Runs the binary to completion, whatever its exit code.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("spawn the esr-ingest binary")
    }

    /// Runs the binary and requires exit code 0.
    pub fn run_ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(out.status.success(), "`esr-ingest {}` failed\n{}", args.join(" "), describe(&out));
        out
    }

    /// `run --once`, required to succeed.
    pub fn run_once(&self) -> Output {
        self.run_ok(&["run", "--once"])
    }

    /// `sequence skip`, required to succeed.
    pub fn skip(&self, region: &str, seq: u32, reason: &str) -> Output {
        let seq = seq.to_string();
        self.run_ok(&["sequence", "skip", "--region", region, "--seq", seq.as_str(), "--reason", reason])
    }

    /// `status --json`, parsed.
    pub fn status_json(&self) -> Value {
        parse_json(&self.run_ok(&["status", "--json"]), "status --json")
    }

    /// The raw bytes `export` writes to stdout.
    pub fn export_raw(&self) -> Vec<u8> {
        self.run_ok(&["export"]).stdout
    }

    /// `export` as text, for comparisons with readable failure messages.
    pub fn export_text(&self) -> String {
        String::from_utf8(self.export_raw()).expect("export writes UTF-8")
    }

    /// `export`, one JSON value per line.
    pub fn export_lines(&self) -> Vec<Value> {
        parse_json_lines(&self.export_raw(), "export")
    }

    /// `rejects --json` plus `extra` arguments, as the array's entries.
    pub fn rejects_json(&self, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["rejects", "--json"];
        args.extend_from_slice(extra);
        let out = self.run_ok(&args);
        match parse_json(&out, "rejects --json") {
            Value::Array(entries) => entries,
            other => panic!("rejects --json is not a JSON array:\n{other:#}"),
        }
    }

    /// Writes `bytes` as `name` in the inbox (creating folders in front) with a
    /// modification time newer than any earlier write in this sandbox.
    pub fn write_file(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.inbox.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create folders in the inbox");
        }
        fs::write(&path, bytes).expect("write a file into the inbox");
        self.stamp(&path);
        path
    }

    /// Writes a built file (see [`esr_file`]) and returns its name.
    pub fn deliver(&self, file: &(String, String)) -> String {
        self.write_file(&file.0, &file.1);
        file.0.clone()
    }

    /// Re-delivers `name` unchanged: same bytes, newer modification time.
    pub fn touch_newer(&self, name: &str) {
        self.stamp(&self.inbox.join(name));
    }

    fn stamp(&self, path: &Path) {
        let mtime = self.clock.get() + Duration::from_secs(10);
        self.clock.set(mtime);
        fs::File::options()
            .write(true)
            .open(path)
            .and_then(|file| file.set_modified(mtime))
            .unwrap_or_else(|e| panic!("set the mtime of {}: {e}", path.display()));
    }
}

/// Exit code, stdout and stderr of a finished command, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit code: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn parse_json(out: &Output, what: &str) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: stdout is not one JSON document ({e})\n{}", describe(out)))
}

pub fn parse_json_lines(bytes: &[u8], what: &str) -> Vec<Value> {
    let text = std::str::from_utf8(bytes).unwrap_or_else(|e| panic!("{what}: output is not UTF-8 ({e})"));
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: line {} is not JSON ({e}): {line}", i + 1))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// status --json accessors

pub fn stream<'a>(status: &'a Value, region: &str) -> &'a Value {
    status["streams"]
        .as_array()
        .and_then(|streams| streams.iter().find(|s| s["region"] == region))
        .unwrap_or_else(|| panic!("no stream for region {region} in status:\n{status:#}"))
}

pub fn next_seq(status: &Value, region: &str) -> Option<u64> {
    let value = &stream(status, region)["next_seq"];
    if value.is_null() {
        return None;
    }
    Some(value.as_u64().unwrap_or_else(|| panic!("next_seq of {region} is neither a number nor null:\n{status:#}")))
}

pub fn held(status: &Value, region: &str) -> Vec<u64> {
    stream(status, region)["held"]
        .as_array()
        .unwrap_or_else(|| panic!("held of {region} is not an array:\n{status:#}"))
        .iter()
        .map(|seq| seq.as_u64().unwrap_or_else(|| panic!("held SEQ {seq} is not a number:\n{status:#}")))
        .collect()
}

pub fn gap_alert(status: &Value, region: &str) -> bool {
    stream(status, region)["gap_alert"]
        .as_bool()
        .unwrap_or_else(|| panic!("gap_alert of {region} is not a bool:\n{status:#}"))
}

pub fn count(status: &Value, key: &str) -> u64 {
    status["counts"][key].as_u64().unwrap_or_else(|| panic!("counts.{key} missing or not a number:\n{status:#}"))
}

pub fn quarantined_files(status: &Value) -> Vec<String> {
    status["quarantined"]
        .as_array()
        .unwrap_or_else(|| panic!("quarantined is not an array:\n{status:#}"))
        .iter()
        .map(|entry| {
            entry["file"].as_str().unwrap_or_else(|| panic!("quarantined entry without file: {entry}")).to_string()
        })
        .collect()
}

/// The reason `file` is quarantined for, if it is.
pub fn quarantine_reason(status: &Value, file: &str) -> Option<String> {
    status["quarantined"]
        .as_array()
        .unwrap_or_else(|| panic!("quarantined is not an array:\n{status:#}"))
        .iter()
        .find(|entry| entry["file"] == file)
        .map(|entry| {
            entry["reason"].as_str().unwrap_or_else(|| panic!("quarantined entry without reason: {entry}")).to_string()
        })
}

// ---------------------------------------------------------------------------
// export accessors

pub fn find_record<'a>(export: &'a [Value], rtype: &str, key: &str) -> Option<&'a Value> {
    export.iter().find(|rec| rec["type"] == rtype && rec["key"] == key)
}

pub fn record<'a>(export: &'a [Value], rtype: &str, key: &str) -> &'a Value {
    find_record(export, rtype, key).unwrap_or_else(|| panic!("no {rtype} {key} in the export:\n{export:#?}"))
}

pub fn title(rec: &Value) -> Option<&str> {
    rec["fields"]["position_title"].as_str()
}

// ---------------------------------------------------------------------------
// files of the default profile

/// `DE_<REGION>_<KIND>_<YYYYMMDD>_<SEQ>.DAT` with SEQ zero-padded to 8 digits.
pub fn esr_name(region: &str, kind: &str, date: &str, seq: u32) -> String {
    format!("DE_{region}_{kind}_{date}_{seq:08}.DAT")
}

pub fn header(kind: &str, region: &str, date: &str, seq: u32) -> String {
    format!("HDR,{kind},{region},{date},{seq:08}")
}

pub fn trailer(count: usize) -> String {
    format!("TRL,{count}")
}

/// A well-formed file: header, the records, a trailer with the right count; LF line
/// ends. Returns (name, content).
pub fn esr_file(region: &str, kind: &str, date: &str, seq: u32, records: &[impl AsRef<str>]) -> (String, String) {
    let mut content = header(kind, region, date, seq);
    content.push('\n');
    for rec in records {
        content.push_str(rec.as_ref());
        content.push('\n');
    }
    content.push_str(&trailer(records.len()));
    content.push('\n');
    (esr_name(region, kind, date, seq), content)
}

/// The text of a well-formed file (see [`esr_file`]).
pub fn file_text(region: &str, kind: &str, date: &str, seq: u64, records: &[impl AsRef<str>]) -> String {
    esr_file(region, kind, date, u32::try_from(seq).expect("a SEQ of the tests"), records).1
}

/// Raw lines (any bytes), each followed by `eol`.
pub fn join_lines(lines: &[&[u8]], eol: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        out.extend_from_slice(line);
        out.extend_from_slice(eol);
    }
    out
}

/// "20220730" -> "2022-07-30", the form `export` uses.
pub fn iso_date(date: &str) -> String {
    format!("{}-{}-{}", &date[0..4], &date[4..6], &date[6..8])
}

// ---------------------------------------------------------------------------
// record lines (field numbers are 1-based, as in the contract's table)

pub const POR_FIELD_COUNT: usize = 13;
pub const POS_FIELD_COUNT: usize = 16;

pub const F_TYPE: usize = 1;
pub const F_POSITION_ID: usize = 2;
pub const F_INDICATOR: usize = 4;
pub const F_POSITION_NUMBER: usize = 5;
pub const F_TITLE: usize = 6;
pub const POR_MANAGING_DEANERY: usize = 8;
pub const POR_VPD_CODE: usize = 11;
pub const POR_ESR_LOCATION: usize = 13;
pub const POS_OCCUPATION_CODE: usize = 7;
pub const POS_GRADE_TRUST: usize = 13;

pub const ESR_LOCATION: &str = "Salisbury District Hospital";

/// The 13 fields of a valid POR line; every value respects its type.
pub fn por_fields(id: &str, indicator: &str, title: &str) -> Vec<String> {
    [
        "POR",
        id,
        "",
        indicator,
        "1001",
        title,
        "SEV/RNZ02/001",
        "SEV",
        "Y",
        "RNZ02",
        "1234",
        "Salisbury NHS Foundation Trust",
        ESR_LOCATION,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The 16 fields of a valid POS line; every value respects its type.
pub fn pos_fields(id: &str, indicator: &str, title: &str) -> Vec<String> {
    [
        "POS",
        id,
        "",
        indicator,
        "2002",
        title,
        "MRA1",
        "Medicine",
        "",
        "SEV/RNZ02/002",
        "SEV",
        "RNZ02",
        "ST1",
        "MN37",
        "Specialty Registrar",
        "RNZ02",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

pub fn por(id: u64, indicator: &str, title: &str) -> String {
    por_fields(&id.to_string(), indicator, title).join(",")
}

pub fn pos(id: u64, indicator: &str, title: &str) -> String {
    pos_fields(&id.to_string(), indicator, title).join(",")
}

/// A POR delete: type, id and `D`, every other field empty.
pub fn por_delete(id: u64) -> String {
    let mut fields = vec![String::new(); POR_FIELD_COUNT];
    fields[0] = "POR".into();
    fields[1] = id.to_string();
    fields[3] = "D".into();
    fields.join(",")
}

/// A POS delete: type, id and `D`, every other field empty.
pub fn pos_delete(id: u64) -> String {
    let mut fields = vec![String::new(); POS_FIELD_COUNT];
    fields[0] = "POS".into();
    fields[1] = id.to_string();
    fields[3] = "D".into();
    fields.join(",")
}

/// `fields` with field `number` (1-based) replaced by `value`, joined into a line.
pub fn with_field(mut fields: Vec<String>, number: usize, value: &str) -> String {
    fields[number - 1] = value.to_string();
    fields.join(",")
}
