//! A reference model of the contract, for random histories run against the real binary.
//!
//! The model is written from `CONTRACT.md` and the README's "How the rules behave", not
//! from the engine's code: names are judged by content when uploaded again, a SEQ belongs to
//! its first claimant, streams apply files in SEQ order and hold behind gaps, late files
//! fill in under the version rule, skipped names stay skipped. The driver applies an
//! operation to both the model and a [`Sandbox`] and compares `export`, `status` and the
//! counters after every complete run.

use super::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

pub const REGIONS: [&str; 2] = ["SEV", "WES"];

/// One step of a history.
#[derive(Clone, Debug)]
pub enum Op {
    /// Writes a file: `kind_full` picks RMF, `other_date` gives the SEQ another date (a
    /// second claimant), `variant` picks the content (4: a broken trailer, 3: a rejected
    /// line).
    Upload {
        region: usize,
        seq: u64,
        kind_full: bool,
        other_date: bool,
        variant: u8,
    },
    /// The same bytes again with a newer modification time.
    Touch {
        pick: usize,
    },
    Delete {
        pick: usize,
    },
    Skip {
        region: usize,
        seq: u64,
    },
    Run,
    /// `run --once` killed after `delay_ms`, then a complete `run --once`.
    KillRun {
        delay_ms: u64,
    },
    /// `run --once` with faults injected at every port (seeded), then a clean one.
    FaultyRun {
        seed: u64,
    },
}

/// A file's name and content from its parameters.
pub fn build_file(region: &str, seq: u64, kind_full: bool, other_date: bool, variant: u8) -> (String, String) {
    let kind = if kind_full { "RMF" } else { "RMC" };
    let day = chrono::NaiveDate::from_ymd_opt(2022, 7, 1).expect("a date")
        + chrono::Days::new(seq + 20 * u64::from(other_date));
    let date = day.format("%Y%m%d").to_string();
    // Each region has its own position ids: across regions the order of application is
    // free, so shared ids would make the applied/stale split depend on timing.
    let base = 100 * (REGIONS.iter().position(|r| *r == region).unwrap_or(0) as u64 + 1);
    let mut lines = Vec::new();
    for k in 1..=4u64 {
        let key = base + k;
        if (u64::from(variant) + k) % 3 == 0 {
            continue;
        }
        let title = format!("{region}-{seq}-{kind}-{date}-v{variant}-k{k}");
        lines.push(if (u64::from(variant) * k) % 5 == 4 { por_delete(key) } else { por(key, "C", &title) });
        if k == 2 {
            lines.push(pos(key, "C", &title));
        }
    }
    if variant == 3 {
        lines.push("XYZ,1,,C".to_string());
    }
    let (name, mut text) = esr_file(region, kind, &date, seq as u32, &lines);
    if variant == 4 {
        text = text.replace(&format!("TRL,{}", lines.len()), &format!("TRL,{}", lines.len() + 1));
    }
    (name, text)
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Object {
    text: String,
    /// Changes with every write or touch (the folder source's fingerprint).
    fingerprint: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Pending,
    Applied,
    Quarantined,
    Skipped,
}

#[derive(Clone, Debug)]
struct Entry {
    region: String,
    seq: u64,
    date: String,
    state: State,
    /// The content recorded (known once read).
    content: Option<String>,
    fingerprint: u64,
    first_seen: u64,
    /// An applied name uploaded again with other content: the fingerprint judged.
    conflict: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rec {
    pub deleted: bool,
    pub file: String,
    pub seq: u64,
    pub line: u64,
    pub title: Option<String>,
}

#[derive(Clone, Debug, Default)]
struct Stream {
    next: Option<u64>,
    skipped: BTreeSet<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub applied_files: u64,
    pub duplicate_files: u64,
    pub records_applied: u64,
    pub records_stale: u64,
    pub records_unchanged: u64,
    pub records_rejected: u64,
}

/// The model: the source, the ledger, the streams and the records.
#[derive(Clone, Debug, Default)]
pub struct Model {
    objects: BTreeMap<String, Object>,
    ledger: BTreeMap<String, Entry>,
    streams: BTreeMap<String, Stream>,
    pub records: BTreeMap<(String, String), Rec>,
    pub counts: Counts,
    passes: u64,
    fingerprints: u64,
}

impl Model {
    pub fn object_names(&self) -> Vec<String> {
        self.objects.keys().cloned().collect()
    }

    pub fn write(&mut self, name: &str, text: String) {
        self.fingerprints += 1;
        self.objects.insert(name.to_string(), Object { text, fingerprint: self.fingerprints });
    }

    pub fn touch(&mut self, name: &str) {
        self.fingerprints += 1;
        if let Some(o) = self.objects.get_mut(name) {
            o.fingerprint = self.fingerprints;
        }
    }

    pub fn delete(&mut self, name: &str) {
        self.objects.remove(name);
    }

    /// `sequence skip`: the exit code it should have.
    pub fn skip(&mut self, region: &str, seq: u64) -> i32 {
        let known = self.streams.contains_key(region) || self.ledger.values().any(|e| e.region == region);
        if !known {
            return 2;
        }
        let at_seq = |e: &Entry| e.region == region && e.seq == seq;
        if self.ledger.values().any(|e| at_seq(e) && e.state == State::Applied) {
            return 1;
        }
        let stream = self.streams.entry(region.to_string()).or_default();
        if stream.next.is_some_and(|n| seq < n) && !stream.skipped.contains(&seq) {
            return 1;
        }
        stream.skipped.insert(seq);
        for (name, e) in self.ledger.iter_mut().filter(|(_, e)| at_seq(e)) {
            if matches!(e.state, State::Pending | State::Quarantined) {
                e.state = State::Skipped;
                if e.content.is_none()
                    && let Some(o) = self.objects.get(name).filter(|o| o.fingerprint == e.fingerprint)
                {
                    e.content = Some(o.text.clone());
                }
            }
        }
        self.settle(region, false);
        0
    }

    /// One complete `run --once`: discovery, then every stream as far as it may go.
    pub fn run(&mut self) {
        self.passes += 1;
        let names: Vec<String> = self.objects.keys().cloned().collect();
        for name in names {
            self.discover(&name);
        }
        let regions: BTreeSet<String> = self.ledger.values().map(|e| e.region.clone()).collect();
        for region in regions {
            let stream = self.streams.entry(region.clone()).or_default();
            if stream.next.is_none() {
                let present =
                    |(name, e): &(&String, &Entry)| e.state != State::Pending || self.objects.contains_key(*name);
                stream.next =
                    self.ledger.iter().filter(|(_, e)| e.region == region).filter(present).map(|(_, e)| e.seq).min();
            }
            // A file quarantined at a SEQ the operator had skipped does not hold the stream:
            // the SEQ is passed once nothing at it is pending, and the stream goes on in the
            // same run.
            loop {
                self.settle(&region, true);
                let Some(name) = self.next_action(&region) else { break };
                self.process(&name);
            }
        }
    }

    fn discover(&mut self, name: &str) {
        let object = self.objects[name].clone();
        let Some(entry) = self.ledger.get_mut(name) else {
            let (region, seq, date) = parse_name(name);
            let entry = Entry {
                region,
                seq,
                date,
                state: State::Pending,
                content: None,
                fingerprint: object.fingerprint,
                first_seen: self.passes,
                conflict: None,
            };
            self.ledger.insert(name.to_string(), entry);
            self.judge_claim(name);
            return;
        };
        if entry.fingerprint == object.fingerprint || entry.conflict == Some(object.fingerprint) {
            if entry.state == State::Skipped && entry.content.is_none() {
                entry.content = Some(object.text);
            }
            return;
        }
        if entry.state == State::Pending {
            entry.fingerprint = object.fingerprint;
            return;
        }
        if entry.content.as_deref() == Some(object.text.as_str()) {
            self.counts.duplicate_files += 1;
            entry.fingerprint = object.fingerprint;
            entry.conflict = None;
            return;
        }
        match entry.state {
            State::Applied => entry.conflict = Some(object.fingerprint),
            _ => {
                entry.state = State::Pending;
                entry.content = None;
                entry.fingerprint = object.fingerprint;
                self.judge_claim(name);
            }
        }
    }

    /// A pending name whose SEQ another name claimed first is quarantined as a conflict.
    fn judge_claim(&mut self, name: &str) {
        let me = &self.ledger[name];
        let owner = self
            .ledger
            .iter()
            .filter(|(_, e)| e.region == me.region && e.seq == me.seq)
            .min_by(|a, b| (a.1.first_seen, a.0).cmp(&(b.1.first_seen, b.0)))
            .map(|(n, _)| n.clone());
        if owner.as_deref() != Some(name) {
            let text = self.objects[name].text.clone();
            let e = self.ledger.get_mut(name).expect("the entry");
            e.state = State::Quarantined;
            e.content = Some(text);
        }
    }

    /// Moves a stream past every SEQ that is done. During a run, pending files that left
    /// the source do not count; `sequence skip` counts every pending file.
    fn settle(&mut self, region: &str, present_only: bool) {
        let Some(mut next) = self.streams.get(region).and_then(|s| s.next) else { return };
        loop {
            let at: Vec<(&String, &Entry)> = self
                .ledger
                .iter()
                .filter(|(_, e)| e.region == region && e.seq == next)
                .filter(|(n, e)| !present_only || e.state != State::Pending || self.objects.contains_key(*n))
                .collect();
            if at.iter().any(|(_, e)| e.state == State::Pending) {
                break;
            }
            if self.streams[region].skipped.contains(&next) || at.iter().any(|(_, e)| e.state == State::Applied) {
                next += 1;
            } else {
                break;
            }
        }
        self.streams.get_mut(region).expect("the stream").next = Some(next);
    }

    fn next_action(&self, region: &str) -> Option<String> {
        let next = self.streams.get(region)?.next?;
        let pending = |seq: u64| {
            self.ledger
                .iter()
                .find(|(n, e)| {
                    e.region == region && e.seq == seq && e.state == State::Pending && self.objects.contains_key(*n)
                })
                .map(|(n, _)| n.clone())
        };
        let late = self
            .ledger
            .iter()
            .filter(|(n, e)| {
                e.region == region && e.seq < next && e.state == State::Pending && self.objects.contains_key(*n)
            })
            .map(|(_, e)| e.seq)
            .min();
        match late {
            Some(seq) => pending(seq),
            None => pending(next),
        }
    }

    fn process(&mut self, name: &str) {
        let text = self.objects[name].text.clone();
        let (region, seq, date) = {
            let e = &self.ledger[name];
            (e.region.clone(), e.seq, e.date.clone())
        };
        let lines: Vec<&str> = text.lines().collect();
        let declared: usize =
            lines.last().and_then(|l| l.strip_prefix("TRL,")).and_then(|c| c.parse().ok()).unwrap_or(0);
        let e = self.ledger.get_mut(name).expect("the entry");
        e.content = Some(text.clone());
        if declared != lines.len() - 2 {
            e.state = State::Quarantined;
            return;
        }
        e.state = State::Applied;
        self.counts.applied_files += 1;
        for (i, line) in lines.iter().enumerate().take(lines.len() - 1).skip(1) {
            let number = i as u64 + 1;
            let fields: Vec<&str> = line.split(',').collect();
            if !matches!(fields[0], "POR" | "POS") {
                self.counts.records_rejected += 1;
                continue;
            }
            let rec = Rec {
                deleted: fields[3] == "D",
                file: name.to_string(),
                seq,
                line: number,
                title: (fields[3] != "D").then(|| fields[5].to_string()),
            };
            let identity = (fields[0].to_string(), fields[1].to_string());
            let version = |r: &Rec, d: &str| (d.to_string(), r.seq, r.line);
            let stored = self.records.get(&identity).map(|r| version(r, &self.ledger[&r.file].date));
            let new = version(&rec, &date);
            match stored.as_ref().map(|s| new.cmp(s)) {
                None | Some(std::cmp::Ordering::Greater) => {
                    self.counts.records_applied += 1;
                    self.records.insert(identity, rec);
                }
                Some(std::cmp::Ordering::Equal) => self.counts.records_unchanged += 1,
                Some(std::cmp::Ordering::Less) => self.counts.records_stale += 1,
            }
        }
        let next = self.streams.get(&region).and_then(|s| s.next);
        if next == Some(seq) {
            self.settle(&region, true);
        }
    }

    /// The records as exported: the last write of each identity, except that a live record
    /// older than an applied full file (RMF) of its region shows as a tombstone of the
    /// earliest such full file (the contract's full-file rule, in version order).
    fn shown_records(&self) -> BTreeMap<(String, String), Rec> {
        let full_files: Vec<(&str, &String, u64, &String)> = self
            .ledger
            .iter()
            .filter(|(name, e)| e.state == State::Applied && name.contains("_RMF_"))
            .map(|(name, e)| (e.region.as_str(), &e.date, e.seq, name))
            .collect();
        self.records
            .iter()
            .map(|(identity, rec)| {
                let written = &self.ledger[&rec.file];
                let removed_by = full_files
                    .iter()
                    .filter(|(region, date, seq, _)| {
                        !rec.deleted && *region == written.region && (*date, *seq) > (&written.date, rec.seq)
                    })
                    .min_by_key(|(_, date, seq, _)| (*date, *seq));
                let shown = match removed_by {
                    Some((_, _, seq, name)) => {
                        Rec { deleted: true, file: (*name).clone(), seq: *seq, line: 0, title: None }
                    }
                    None => rec.clone(),
                };
                (identity.clone(), shown)
            })
            .collect()
    }

    /// Compares the binary's state with the model's; returns every difference. With
    /// `per_step_store` (MongoDB, no transactions), a line applied by a run that was killed
    /// before its receipt was written counts as unchanged when it is delivered again, so
    /// only the sum of applied and unchanged lines is exact there.
    pub fn differences(&self, sb: &dyn Installation, per_step_store: bool) -> Vec<String> {
        let mut out = Vec::new();
        let status = sb.status_json();
        let got = |key: &str| status["counts"][key].as_u64();
        let mut exact = vec![
            ("applied_files", self.counts.applied_files, got("applied_files")),
            ("duplicate_files", self.counts.duplicate_files, got("duplicate_files")),
            ("records_stale", self.counts.records_stale, got("records_stale")),
            ("records_rejected", self.counts.records_rejected, got("records_rejected")),
        ];
        if per_step_store {
            let sum = got("records_applied").zip(got("records_unchanged")).map(|(a, u)| a + u);
            exact.push((
                "records_applied + records_unchanged",
                self.counts.records_applied + self.counts.records_unchanged,
                sum,
            ));
        } else {
            exact.push(("records_applied", self.counts.records_applied, got("records_applied")));
            exact.push(("records_unchanged", self.counts.records_unchanged, got("records_unchanged")));
        }
        for (key, want, got) in exact {
            if got != Some(want) {
                out.push(format!("counts.{key}: binary {got:?}, model {want}"));
            }
        }
        for (region, stream) in &self.streams {
            let got = status["streams"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["region"] == region.as_str()))
                .map(|s| s["next_seq"].as_u64());
            if got.flatten() != stream.next {
                out.push(format!("{region} next_seq: binary {got:?}, model {:?}", stream.next));
            }
            let held: Vec<u64> = self
                .ledger
                .values()
                .filter(|e| e.region == *region && e.state == State::Pending && stream.next.is_some_and(|n| e.seq > n))
                .map(|e| e.seq)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let got_held: Option<Vec<u64>> = status["streams"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["region"] == region.as_str()))
                .and_then(|s| s["held"].as_array().map(|h| h.iter().filter_map(Value::as_u64).collect()));
            if stream.next.is_some() && got_held.as_ref() != Some(&held) {
                out.push(format!("{region} held: binary {got_held:?}, model {held:?}"));
            }
        }
        let quarantined: BTreeSet<String> = self
            .ledger
            .iter()
            .filter(|(_, e)| e.state == State::Quarantined || e.conflict.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        let got: BTreeSet<String> = quarantined_files(&status).into_iter().collect();
        if got != quarantined {
            out.push(format!("quarantined: binary {got:?}, model {quarantined:?}"));
        }
        let export = sb.export_lines();
        let mut seen = BTreeMap::new();
        for rec in &export {
            let identity =
                (rec["type"].as_str().unwrap_or("").to_string(), rec["key"].as_str().unwrap_or("").to_string());
            seen.insert(
                identity,
                Rec {
                    deleted: rec["deleted"].as_bool().unwrap_or(false),
                    file: rec["file"].as_str().unwrap_or("").to_string(),
                    seq: rec["version"]["seq"].as_u64().unwrap_or(0),
                    line: rec["version"]["line"].as_u64().unwrap_or(0),
                    title: rec["fields"]["position_title"].as_str().map(str::to_string),
                },
            );
        }
        let shown = self.shown_records();
        for identity in shown.keys().chain(seen.keys()).collect::<BTreeSet<_>>() {
            let (want, got) = (shown.get(identity), seen.get(identity));
            if want != got {
                out.push(format!("record {identity:?}: binary {got:?}, model {want:?}"));
            }
        }
        out
    }
}

/// Where a history runs: a source to change and the binary's command line over it.
pub trait Installation {
    /// Puts `text` as `name`, as a new upload.
    fn write(&self, name: &str, text: &str);
    /// Uploads `name` again with the same bytes.
    fn touch(&self, name: &str);
    fn delete(&self, name: &str);
    /// The binary with this installation's source, store and config.
    fn command(&self, args: &[&str]) -> std::process::Command;
    /// Whether the store writes a file step by step (no transactions).
    fn per_step_store(&self) -> bool {
        false
    }
    /// The faults a faulty run injects (`ESR_INGEST_FAULTS` without seed and rate).
    fn fault_kinds(&self) -> String {
        "kinds=before+after+delay".into()
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.command(args).stdin(std::process::Stdio::null()).output().expect("spawn the esr-ingest binary")
    }
    fn status_json(&self) -> Value {
        let out = self.run(&["status", "--json"]);
        assert!(out.status.success(), "status failed\n{}", describe(&out));
        parse_json(&out, "status --json")
    }
    fn export_lines(&self) -> Vec<Value> {
        let out = self.run(&["export"]);
        assert!(out.status.success(), "export failed\n{}", describe(&out));
        parse_json_lines(&out.stdout, "export")
    }
}

impl Installation for Sandbox {
    fn write(&self, name: &str, text: &str) {
        self.write_file(name, text);
    }
    fn touch(&self, name: &str) {
        self.touch_newer(name);
    }
    fn delete(&self, name: &str) {
        std::fs::remove_file(self.inbox.join(name)).expect("delete a file from the inbox");
    }
    fn command(&self, args: &[&str]) -> std::process::Command {
        Sandbox::command(self, args)
    }
}

/// (region, SEQ, YYYYMMDD) of a name this module built.
fn parse_name(name: &str) -> (String, u64, String) {
    let parts: Vec<&str> = name.trim_end_matches(".DAT").split('_').collect();
    (parts[1].to_string(), parts[4].parse().expect("a SEQ"), parts[3].to_string())
}
