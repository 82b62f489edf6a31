//! `layout check`: what a layout makes of sample files, line by line, for a person adapting
//! a layout to real extracts. Reads the samples only; writes nothing.

use super::{EXIT_FINDINGS, EXIT_OK, UsageError};
use crate::config::Settings;
use crate::core::name::{FileName, NameVerdict, object_name};
use crate::core::parse::{FileParser, Line, ParseError};
use crate::core::schema::Layout;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What one line became.
#[derive(Debug, Serialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
enum LineReport {
    Record { line: u64, r#type: String, key: String, deleted: bool },
    Ignored { line: u64, r#type: String },
    Rejected { line: u64, reason: String },
}

#[derive(Debug, Default, Serialize)]
struct Summary {
    record_lines: u64,
    records: BTreeMap<String, u64>,
    ignored: BTreeMap<String, u64>,
    rejected: u64,
}

#[derive(Debug, Serialize)]
struct FileReport {
    file: String,
    /// Why the file name was not compared with the header, if it was not.
    name_note: Option<String>,
    lines: Vec<LineReport>,
    /// A file-level fault: the whole file would be quarantined.
    fault: Option<String>,
    summary: Summary,
}

impl FileReport {
    fn clean(&self) -> bool {
        self.fault.is_none() && self.summary.rejected == 0
    }
}

/// The file name the header is compared with: the sample's own, when the profile reads
/// it; otherwise a stand-in, with the header's name checks left out.
fn name_for(settings: &Settings, path: &Path, layout: &mut Arc<Layout>) -> (FileName, Option<String>) {
    let name = object_name(&path.to_string_lossy()).to_string();
    if let NameVerdict::Batch(f) = settings.profile.classify(&name) {
        return (f, None);
    }
    let mut relaxed = (**layout).clone();
    if let Some(h) = relaxed.header.as_mut() {
        h.check_name = false;
    }
    *layout = Arc::new(relaxed);
    let stand_in = FileName {
        name: name.clone(),
        region: String::new(),
        kind: String::new(),
        date: chrono::NaiveDate::MIN,
        seq: 0,
    };
    (stand_in, Some(format!("{name} does not match the name pattern: the header is not compared with the name")))
}

fn check_one(settings: &Settings, layout: &Arc<Layout>, path: &Path) -> Result<FileReport, UsageError> {
    let mut layout = layout.clone();
    let (file, name_note) = name_for(settings, path, &mut layout);
    let open = || std::fs::File::open(path).map_err(|e| UsageError(format!("{}: {e}", path.display())));
    let mut parser = FileParser::new(std::io::BufReader::new(open()?), &file, layout);
    let mut report = FileReport {
        file: path.display().to_string(),
        name_note,
        lines: Vec::new(),
        fault: None,
        summary: Summary::default(),
    };
    loop {
        match parser.next_line() {
            Ok(Some(Line::Record(r))) => {
                *report.summary.records.entry(r.record_type.to_string()).or_default() += 1;
                report.lines.push(LineReport::Record {
                    line: r.version.line,
                    r#type: r.record_type.to_string(),
                    key: r.key,
                    deleted: r.deleted,
                });
            }
            Ok(Some(Line::Ignored { record_type, line })) => {
                *report.summary.ignored.entry(record_type.to_string()).or_default() += 1;
                report.lines.push(LineReport::Ignored { line, r#type: record_type.to_string() });
            }
            Ok(Some(Line::Reject(r))) => {
                report.summary.rejected += 1;
                report.lines.push(LineReport::Rejected { line: r.line, reason: r.reason });
            }
            Ok(None) => {
                match parser.finish() {
                    Ok(summary) => report.summary.record_lines = summary.record_lines,
                    Err(ParseError::Fault(f)) => report.fault = Some(f.to_string()),
                    Err(ParseError::Read(e)) => return Err(UsageError(format!("{}: {e}", path.display()))),
                }
                return Ok(report);
            }
            Err(ParseError::Fault(f)) => {
                report.fault = Some(f.to_string());
                return Ok(report);
            }
            Err(ParseError::Read(e)) => return Err(UsageError(format!("{}: {e}", path.display()))),
        }
    }
}

fn print_text(out: &mut impl Write, r: &FileReport) -> std::io::Result<()> {
    writeln!(out, "{}", r.file)?;
    if let Some(note) = &r.name_note {
        writeln!(out, "  note: {note}")?;
    }
    for l in &r.lines {
        match l {
            LineReport::Record { line, r#type, key, deleted } => {
                let what = if *deleted { "delete" } else { "change" };
                writeln!(out, "  line {line:>6}  {type} {key:<24} applied ({what})", type = r#type)?;
            }
            LineReport::Ignored { line, r#type } => {
                writeln!(out, "  line {line:>6}  {type} ignored (not applied)", type = r#type)?
            }
            LineReport::Rejected { line, reason } => writeln!(out, "  line {line:>6}  rejected: {reason}")?,
        }
    }
    match &r.fault {
        Some(f) => writeln!(out, "  FILE FAULT (the whole file would be quarantined): {f}")?,
        None => writeln!(out, "  header and trailer: ok")?,
    }
    let list = |m: &BTreeMap<String, u64>| {
        if m.is_empty() {
            return String::new();
        }
        format!(" ({})", m.iter().map(|(t, n)| format!("{t} {n}")).collect::<Vec<_>>().join(", "))
    };
    writeln!(
        out,
        "  summary: {} record line(s): {} applied{}, {} ignored{}, {} rejected",
        r.summary.record_lines,
        r.summary.records.values().sum::<u64>(),
        list(&r.summary.records),
        r.summary.ignored.values().sum::<u64>(),
        list(&r.summary.ignored),
        r.summary.rejected
    )
}

pub fn check(settings: &Settings, layout: Option<PathBuf>, samples: &[PathBuf], json: bool) -> anyhow::Result<i32> {
    let given = match layout {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
            Some(Arc::new(Layout::from_toml(&text).map_err(|e| UsageError(format!("{}: {e}", path.display())))?))
        }
    };
    // Without --layout, each sample is read with the profile's layout for its kind.
    let layout_for = |path: &PathBuf| match &given {
        Some(l) => l.clone(),
        None => match settings.profile.classify(object_name(&path.to_string_lossy())) {
            NameVerdict::Batch(f) => settings.layouts.for_kind(&f.kind).clone(),
            _ => settings.layouts.default.clone(),
        },
    };
    let reports = samples.iter().map(|p| check_one(settings, &layout_for(p), p)).collect::<Result<Vec<_>, _>>()?;
    let names: Vec<String> = samples.iter().map(|p| layout_for(p).name.clone()).collect();
    let layout_name = if names.windows(2).all(|w| w[0] == w[1]) { names.first().cloned() } else { None };
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &serde_json::json!({ "layout": layout_name, "files": reports }))?;
        writeln!(out)?;
    } else {
        let shown = layout_name.unwrap_or_else(|| "per file kind".into());
        writeln!(out, "layout {shown}: {} file(s)", reports.len())?;
        for r in &reports {
            print_text(&mut out, r)?;
        }
    }
    Ok(if reports.iter().all(FileReport::clean) { EXIT_OK } else { EXIT_FINDINGS })
}
