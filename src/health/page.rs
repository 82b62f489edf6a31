//! The status page at `/`: what a person needs at a glance, server-rendered (no scripts,
//! no build step). Per region a strip of the most recent SEQs, each cell coloured by what
//! happened to it; the alerts; the counters.
//!
//! Invariant: every text that comes from files or the store is HTML-escaped.

use crate::core::ledger::FileState;
use crate::engine::status::{StatusDoc, StreamStatus};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::fmt::Write;

/// How many SEQs a region's strip shows at most.
pub const STRIP_LEN: u64 = 20;
/// How many SEQs before the expected one the strip keeps for context.
const STRIP_CONTEXT: u64 = 4;

/// What the ledger says about one SEQ of a region: (state, in conflict, file name).
pub type SeqFiles = BTreeMap<u64, (FileState, bool, String)>;

/// What happened to one SEQ of a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    Applied,
    InFlight,
    Held,
    Gap,
    Quarantined,
    Skipped,
    /// Applied after its SEQ had been skipped (contract: a late file).
    Late,
    /// Before the stream's first file (a configured start): nothing expected.
    Before,
}

impl Cell {
    pub fn class(self) -> &'static str {
        match self {
            Cell::Applied => "applied",
            Cell::InFlight => "in-flight",
            Cell::Held => "held",
            Cell::Gap => "gap",
            Cell::Quarantined => "quarantined",
            Cell::Skipped => "skipped",
            Cell::Late => "late",
            Cell::Before => "before",
        }
    }
}

/// The SEQs the strip of `stream` shows, given the region's files at and after the
/// expected SEQ (`upper`, from the active ledger): what matters first — the expected SEQ
/// (a gap or its quarantined file), then the held files, with a few SEQs of context
/// before. It never reaches below SEQ 1.
pub fn window(stream: &StreamStatus, upper: &SeqFiles) -> Option<(u64, u64)> {
    let highest = [upper.keys().next_back().copied(), stream.held.iter().max().copied()].into_iter().flatten().max();
    let Some(next) = stream.next_seq else {
        // No expected SEQ yet: the region's first files.
        let low = upper.keys().next().copied()?;
        return Some((low, low + STRIP_LEN - 1));
    };
    let top = highest.map_or(next, |h| h.max(next));
    let from = if top - next < STRIP_LEN - STRIP_CONTEXT {
        (top + 1).saturating_sub(STRIP_LEN).max(1)
    } else {
        next.saturating_sub(STRIP_CONTEXT).max(1)
    };
    Some((from, top.min(from + STRIP_LEN - 1)))
}

/// The strip of `stream` over `window`: (SEQ, cell, file name) per SEQ, leading SEQs
/// from before the region's first file left out. `files` holds the region's files in the
/// window.
pub fn strip(stream: &StreamStatus, (from, to): (u64, u64), files: &SeqFiles) -> Vec<(u64, Cell, Option<String>)> {
    let cells: Vec<_> = (from..=to)
        .map(|seq| {
            let skipped = stream.skipped.contains(&seq);
            let awaited = stream.next_seq.is_some_and(|n| seq >= n);
            let cell = match files.get(&seq) {
                Some((_, true, _)) | Some((FileState::Quarantined, _, _)) => Cell::Quarantined,
                Some((FileState::Applied, _, _)) if skipped => Cell::Late,
                Some((FileState::Applied, _, _)) => Cell::Applied,
                Some((FileState::Delivered, _, _)) => Cell::InFlight,
                Some((FileState::Skipped, _, _)) => Cell::Skipped,
                Some((FileState::Pending, _, _)) => Cell::Held,
                None if skipped => Cell::Skipped,
                None if awaited => Cell::Gap,
                None => Cell::Before,
            };
            (seq, cell, files.get(&seq).map(|(_, _, name)| name.clone()))
        })
        .collect();
    let first = cells.iter().position(|(_, c, _)| *c != Cell::Before).unwrap_or(cells.len());
    cells.into_iter().skip(first).collect()
}

/// The held files of `stream` beyond the end of its strip.
pub fn held_beyond(stream: &StreamStatus, (_, to): (u64, u64)) -> usize {
    stream.held.iter().filter(|s| **s > to).count()
}

/// HTML-escapes text for element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}\
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.5rem}\
table{border-collapse:collapse}td,th{padding:.25rem .6rem;text-align:left;border-bottom:1px solid #ddd}\
.strip{display:flex;flex-wrap:wrap;gap:2px;max-width:46rem}.more{font-size:12px;color:#555;align-self:center}\
.cell{display:inline-block;min-width:2rem;padding:.15rem .2rem;\
font:12px monospace;text-align:center;border-radius:3px;color:#fff}\
.applied{background:#2e7d32}.in-flight{background:#0277bd}.held{background:#f9a825;color:#222}\
.gap{background:#fff;color:#c62828;border:2px dashed #c62828}.quarantined{background:#c62828}\
.skipped{background:#757575}.late{background:#6a1b9a}.before{background:#eee;color:#999}\
.alerts li{color:#c62828;font-weight:600}.ok{color:#2e7d32}.badge{font-weight:700;color:#c62828}";

/// The whole page.
/// The whole page; `strips` holds each region's window and the files in it.
pub fn render(doc: &StatusDoc, strips: &BTreeMap<String, ((u64, u64), SeqFiles)>, now: DateTime<Utc>) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"30\"><title>esr-ingest status</title>\
         <style>{STYLE}</style></head><body><h1>esr-ingest</h1>\
         <p>Generated <time id=\"generated\">{}</time></p>",
        escape(&doc.generated_at)
    );
    alerts(&mut h, doc, now);
    streams(&mut h, doc, strips);
    counters(&mut h, doc);
    leases(&mut h, doc);
    h.push_str("</body></html>");
    h
}

fn alerts(h: &mut String, doc: &StatusDoc, _now: DateTime<Utc>) {
    let mut items = Vec::new();
    for s in &doc.streams {
        if s.gap_alert {
            let what = s.waiting_for.as_deref().unwrap_or("a missing SEQ");
            let since = s.waiting_since.as_deref().unwrap_or("?");
            items.push(format!("{}: gap alert, waiting for {what} since {since}", s.region));
        }
        if s.late_alert {
            let since = s.late_since.as_deref().unwrap_or("?");
            items.push(format!("{}: late, no file by {since}", s.region));
        }
    }
    for q in &doc.quarantined {
        items.push(format!("quarantined {}: {}", q.file, q.reason));
    }
    h.push_str("<h2>Alerts</h2>");
    if items.is_empty() {
        h.push_str("<p id=\"alerts\" class=\"ok\">No alerts.</p>");
        return;
    }
    h.push_str("<ul id=\"alerts\" class=\"alerts\">");
    for item in items {
        let _ = write!(h, "<li>{}</li>", escape(&item));
    }
    h.push_str("</ul>");
}

fn streams(h: &mut String, doc: &StatusDoc, strips: &BTreeMap<String, ((u64, u64), SeqFiles)>) {
    h.push_str("<h2>Regions</h2>");
    if doc.streams.is_empty() {
        h.push_str("<p>No files yet.</p>");
        return;
    }
    h.push_str(
        "<table id=\"regions\"><tr><th>Region</th><th>Next SEQ</th><th>Waiting for</th>\
         <th>Last file</th><th>Recent SEQs</th></tr>",
    );
    for s in &doc.streams {
        let mut badges = String::new();
        if s.gap_alert {
            badges.push_str(" <span class=\"badge\">GAP</span>");
        }
        if s.late_alert {
            badges.push_str(" <span class=\"badge\">LATE</span>");
        }
        let _ = write!(
            h,
            "<tr data-region=\"{r}\"><td>{r}{badges}</td><td>{}</td><td>{}</td><td>{}</td><td><div class=\"strip\">",
            s.next_seq.map_or("-".into(), |n| n.to_string()),
            escape(s.waiting_for.as_deref().unwrap_or("-")),
            escape(s.last_file_at.as_deref().unwrap_or("-")),
            r = escape(&s.region),
        );
        let Some((window, files)) = strips.get(&s.region) else {
            h.push_str("</div></td></tr>");
            continue;
        };
        for (seq, cell, file) in strip(s, *window, files) {
            let title = match file {
                Some(f) => format!("SEQ {seq} {}: {f}", cell.class()),
                None => format!("SEQ {seq} {}", cell.class()),
            };
            let _ = write!(
                h,
                "<span class=\"cell {c}\" data-seq=\"{seq}\" data-state=\"{c}\" title=\"{}\">{}</span>",
                escape(&title),
                seq % 1000,
                c = cell.class(),
            );
        }
        let more = held_beyond(s, *window);
        if more > 0 {
            let _ = write!(
                h,
                "<span class=\"more\" data-held-beyond=\"{more}\">+{more} held after SEQ {}</span>",
                window.1
            );
        }
        h.push_str("</div></td></tr>");
    }
    h.push_str("</table><p>Legend: ");
    for c in [Cell::Applied, Cell::InFlight, Cell::Held, Cell::Gap, Cell::Quarantined, Cell::Skipped, Cell::Late] {
        let _ = write!(h, "<span class=\"cell {0}\">{0}</span> ", c.class());
    }
    h.push_str("(cells show the last three digits of the SEQ)</p>");
}

fn counters(h: &mut String, doc: &StatusDoc) {
    let c = &doc.counts;
    let rows = [
        ("applied files", c.totals.applied_files),
        ("duplicate files", c.totals.duplicate_files),
        ("quarantined files", c.quarantined_files),
        ("pending files", c.pending_files),
        ("files in flight", doc.in_flight.len() as u64),
        ("records applied", c.totals.records_applied),
        ("records stale", c.totals.records_stale),
        ("records unchanged", c.totals.records_unchanged),
        ("records rejected", c.totals.records_rejected),
        ("records ignored (types not applied)", c.totals.records_ignored),
        ("records removed by full files", c.totals.records_removed),
        ("records dead-lettered", c.totals.records_dead_lettered),
    ];
    h.push_str("<h2>Counters</h2><table id=\"counters\">");
    for (name, n) in rows {
        let _ = write!(h, "<tr><th>{name}</th><td data-counter=\"{}\">{n}</td></tr>", name.replace(' ', "_"));
    }
    h.push_str("</table>");
}

fn leases(h: &mut String, doc: &StatusDoc) {
    if doc.leases.is_empty() {
        return;
    }
    h.push_str(
        "<h2>Instances</h2><table id=\"leases\"><tr><th>Lease</th><th>Owner</th><th>Token</th><th>Until</th></tr>",
    );
    for l in &doc.leases {
        let until = if l.held { escape(&l.expires_at) } else { format!("expired {}", escape(&l.expires_at)) };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{until}</td></tr>",
            escape(&l.lease),
            escape(&l.owner),
            l.token
        );
    }
    h.push_str("</table>");
}

/// The page when the store does not answer.
pub fn unavailable(reason: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>esr-ingest status</title></head>\
         <body><h1>esr-ingest</h1><p id=\"alerts\">The store does not answer: {}</p></body></html>",
        escape(reason)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(next: Option<u64>, held: Vec<u64>) -> StreamStatus {
        StreamStatus { next_seq: next, held, ..StreamStatus::empty("SEV") }
    }

    fn files(entries: &[(u64, FileState)]) -> SeqFiles {
        entries.iter().map(|(seq, state)| (*seq, (*state, false, format!("F{seq}")))).collect()
    }

    /// A stream that began at SEQ 1000: no cells before its first file, the gap and the
    /// held file both shown.
    #[test]
    fn the_strip_starts_at_the_first_file_and_shows_gap_and_held() {
        let s = stream(Some(1002), vec![1004]);
        let upper = files(&[(1004, FileState::Pending)]);
        let w = window(&s, &upper).expect("a window");
        let all = files(&[(1000, FileState::Applied), (1001, FileState::Applied), (1004, FileState::Pending)]);
        let cells = strip(&s, w, &all);
        assert_eq!(cells.first().map(|c| (c.0, c.1)), Some((1000, Cell::Applied)), "{cells:?}");
        assert!(cells.contains(&(1002, Cell::Gap, None)), "{cells:?}");
        assert!(cells.contains(&(1004, Cell::Held, Some("F1004".into()))), "{cells:?}");
        assert!(cells.iter().all(|c| c.1 != Cell::Before), "{cells:?}");
    }

    /// Held files far beyond the gap: the strip keeps the expected SEQ in view and says
    /// how many held files it could not show.
    #[test]
    fn far_held_files_never_push_the_gap_out_of_view() {
        let s = stream(Some(50), vec![51, 52, 200, 300]);
        let upper = files(&[
            (51, FileState::Pending),
            (52, FileState::Pending),
            (200, FileState::Pending),
            (300, FileState::Pending),
        ]);
        let w = window(&s, &upper).expect("a window");
        assert!(w.0 <= 50 && 50 <= w.1 && w.1 - w.0 < STRIP_LEN, "{w:?}");
        let cells = strip(&s, w, &upper);
        assert!(cells.contains(&(50, Cell::Gap, None)), "{cells:?}");
        assert!(cells.len() as u64 <= STRIP_LEN);
        assert_eq!(held_beyond(&s, w), 2);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
