//! Read-only commands: `status`, `export`, `rejects`.

use super::EXIT_OK;
use crate::config::Settings;
use crate::engine::export_line;
use crate::engine::status::{StatusDoc, collect};
use anyhow::Context;
use chrono::Utc;
use std::io::Write;
use std::path::PathBuf;
use tokio::sync::mpsc;

pub async fn status(settings: Settings, json: bool) -> anyhow::Result<i32> {
    let store = crate::service::wiring::open_store(&settings).await?;
    let doc = collect(store.as_ref(), &settings.status_rules(), Utc::now()).await?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
    } else {
        write_status_table(&mut out, &doc)?;
    }
    Ok(EXIT_OK)
}

fn write_status_table(out: &mut impl Write, doc: &StatusDoc) -> std::io::Result<()> {
    writeln!(out, "STREAMS")?;
    if doc.streams.is_empty() {
        writeln!(out, "  (none yet)")?;
    } else {
        writeln!(
            out,
            "  {:<8} {:>10} {:>12} {:<24} {:<8} HELD / WAITING FOR",
            "REGION", "NEXT SEQ", "LAST APPLIED", "WAITING SINCE", "ALERT"
        )?;
    }
    for s in &doc.streams {
        let held = if s.held.is_empty() {
            "-".to_string()
        } else {
            s.held.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
        };
        let mut waiting = s.waiting_for.as_deref().map(|w| format!("  ({w})")).unwrap_or_default();
        if let Some(since) = &s.late_since {
            waiting.push_str(&format!("  (late: no file by {since})"));
        }
        let alert = match (s.gap_alert, s.late_alert) {
            (true, true) => "GAP,LATE",
            (true, false) => "GAP",
            (false, true) => "LATE",
            (false, false) => "",
        };
        writeln!(
            out,
            "  {:<8} {:>10} {:>12} {:<24} {:<8} {}{}",
            s.region,
            s.next_seq.map_or("-".into(), |n| n.to_string()),
            s.last_applied_seq.map_or("-".into(), |n| n.to_string()),
            s.waiting_since.as_deref().unwrap_or("-"),
            alert,
            held,
            waiting
        )?;
    }
    writeln!(out, "\nQUARANTINED ({})", doc.quarantined.len())?;
    for q in &doc.quarantined {
        writeln!(out, "  {}  {}", q.file, q.reason)?;
    }
    if !doc.in_flight.is_empty() {
        writeln!(out, "\nIN FLIGHT ({}): delivered to the broker, not yet all applied", doc.in_flight.len())?;
        for f in &doc.in_flight {
            writeln!(
                out,
                "  {}  lines {}: confirmed {}, applied {}, stale {}, unchanged {}, rejected {}, dead-lettered {}",
                f.file, f.record_lines, f.confirmed, f.applied, f.stale, f.unchanged, f.rejected, f.dead_lettered
            )?;
        }
    }
    if !doc.recent_actions.is_empty() {
        writeln!(out, "\nRECENT ACTIONS")?;
        for a in &doc.recent_actions {
            let at = a.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let what = match (&a.region, a.seq) {
                (Some(r), Some(s)) => format!("{r} SEQ {s}"),
                (Some(r), None) => r.clone(),
                _ => String::new(),
            };
            writeln!(out, "  {at}  {}  {}  {what}: {}", a.actor, a.action, a.detail)?;
        }
    }
    if !doc.leases.is_empty() {
        writeln!(out, "\nLEASES (several instances on one store)")?;
        for l in &doc.leases {
            let state = if l.held { "held until" } else { "expired at" };
            writeln!(out, "  {:<14} {}  token {}  {state} {}", l.lease, l.owner, l.token, l.expires_at)?;
        }
    }
    let c = &doc.counts;
    writeln!(out, "\nCOUNTS")?;
    writeln!(
        out,
        "  files: {} applied, {} duplicate, {} quarantined, {} pending",
        c.totals.applied_files, c.totals.duplicate_files, c.quarantined_files, c.pending_files
    )?;
    writeln!(
        out,
        "  records: {} applied, {} stale, {} unchanged, {} rejected, {} ignored; {} removed by full files",
        c.totals.records_applied,
        c.totals.records_stale,
        c.totals.records_unchanged,
        c.totals.records_rejected,
        c.totals.records_ignored,
        c.totals.records_removed
    )
}

pub async fn export(settings: Settings, output: Option<PathBuf>) -> anyhow::Result<i32> {
    let store = crate::service::wiring::open_store(&settings).await?;
    let (tx, mut rx) = mpsc::channel(4);
    let producer = tokio::spawn(async move { store.export(tx).await });
    let write = async {
        let (mut sink, tmp): (Box<dyn Write + Send>, Option<PathBuf>) = match &output {
            Some(path) => {
                let tmp = path.with_extension("partial");
                let file = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
                (Box::new(std::io::BufWriter::new(file)), Some(tmp))
            }
            None => (Box::new(std::io::BufWriter::new(std::io::stdout())), None),
        };
        while let Some(batch) = rx.recv().await {
            for r in &batch {
                sink.write_all(export_line(r).as_bytes())?;
                sink.write_all(b"\n")?;
            }
        }
        sink.flush()?;
        drop(sink);
        anyhow::Ok(tmp)
    };
    let tmp = write.await?;
    producer.await.context("export task failed")??;
    if let (Some(tmp), Some(path)) = (tmp, &output) {
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(EXIT_OK)
}

pub async fn rejects(settings: Settings, file: Option<String>, json: bool) -> anyhow::Result<i32> {
    let store = crate::service::wiring::open_store(&settings).await?;
    let rejects = store.rejects(file).await?;
    let mut out = std::io::stdout().lock();
    if json {
        let rows: Vec<_> = rejects
            .iter()
            .map(|r| serde_json::json!({"file": &*r.file, "line": r.line, "reason": r.reason, "raw": r.raw}))
            .collect();
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
    } else if rejects.is_empty() {
        writeln!(out, "no rejected lines")?;
    } else {
        for r in &rejects {
            writeln!(out, "{}:{}: {}", r.file, r.line, r.reason)?;
        }
    }
    Ok(EXIT_OK)
}
