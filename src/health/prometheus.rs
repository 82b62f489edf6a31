//! The Prometheus text of `/metrics`: this process's metrics, then the store's state
//! (records by outcome, held files, gap age, lateness per region, DLQ depth), read at
//! scrape time, so every instance reports the same totals.
//!
//! Invariant: every label has a bounded set of values. Outcomes and states are closed
//! sets of constants here; regions come from the stream table and at most
//! [`MAX_REGION_LABELS`] of them are labelled (the rest are counted in
//! `esr_ingest_regions_unlabelled`).

use crate::core::record::Tally;
use crate::engine::status::{StatusDoc, StreamStatus};
use chrono::{DateTime, Utc};
use std::fmt::Write;

/// The most regions that get their own label values.
pub const MAX_REGION_LABELS: usize = 200;

/// What the broker says at scrape time, when there is one.
#[derive(Clone, Debug, Default)]
pub struct BrokerGauges {
    pub reachable: bool,
    pub dead_letter_depth: Option<u64>,
}

/// The process's metrics followed by the store's state at `now`, in Prometheus text.
pub fn render(doc: Option<&StatusDoc>, broker: Option<&BrokerGauges>, now: DateTime<Utc>) -> String {
    let mut out = crate::telemetry::metrics::install().map(|h| h.render()).unwrap_or_default();
    if let Some(doc) = doc {
        store_state(&mut out, doc, now);
    }
    if let Some(b) = broker {
        family(&mut out, "esr_ingest_broker_up", "gauge", "1 when the broker answers and the topology matches.");
        let _ = writeln!(out, "esr_ingest_broker_up {}", u8::from(b.reachable));
        if let Some(depth) = b.dead_letter_depth {
            family(&mut out, "esr_ingest_dlq_messages", "gauge", "Messages waiting in the dead-letter queue.");
            let _ = writeln!(out, "esr_ingest_dlq_messages {depth}");
        }
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn seconds_since(t: &str, now: DateTime<Utc>) -> Option<f64> {
    let t = DateTime::parse_from_rfc3339(t).ok()?.with_timezone(&Utc);
    Some(((now - t).num_milliseconds().max(0) as f64) / 1000.0)
}

/// One per-region gauge's value for a stream at `now` (`None`: no sample).
type RegionValue = fn(&StreamStatus, DateTime<Utc>) -> Option<f64>;

fn store_state(out: &mut String, doc: &StatusDoc, now: DateTime<Utc>) {
    let c = &doc.counts;
    family(out, "esr_ingest_records_total", "counter", "Record lines in the store's counters, by outcome.");
    let records = Tally {
        applied: c.totals.records_applied,
        stale: c.totals.records_stale,
        unchanged: c.totals.records_unchanged,
        rejected: c.totals.records_rejected,
        dead_lettered: c.totals.records_dead_lettered,
        removed: c.totals.records_removed,
        ignored: c.totals.records_ignored,
    };
    for (outcome, n) in [
        ("applied", records.applied),
        ("stale", records.stale),
        ("unchanged", records.unchanged),
        ("rejected", records.rejected),
        ("dead_lettered", records.dead_lettered),
        ("removed_by_full_files", records.removed),
        ("ignored", records.ignored),
    ] {
        let _ = writeln!(out, "esr_ingest_records_total{{outcome=\"{outcome}\"}} {n}");
    }
    family(out, "esr_ingest_files_total", "counter", "Files in the store's counters, by outcome.");
    let _ = writeln!(out, "esr_ingest_files_total{{outcome=\"applied\"}} {}", c.totals.applied_files);
    let _ = writeln!(out, "esr_ingest_files_total{{outcome=\"duplicate\"}} {}", c.totals.duplicate_files);
    family(out, "esr_ingest_files", "gauge", "Files now in a state that needs attention or time.");
    let _ = writeln!(out, "esr_ingest_files{{state=\"pending\"}} {}", c.pending_files);
    let _ = writeln!(out, "esr_ingest_files{{state=\"quarantined\"}} {}", c.quarantined_files);
    let _ = writeln!(out, "esr_ingest_files{{state=\"in_flight\"}} {}", doc.in_flight.len());

    let labelled = &doc.streams[..doc.streams.len().min(MAX_REGION_LABELS)];
    family(out, "esr_ingest_regions_unlabelled", "gauge", "Regions beyond the label limit (not shown per region).");
    let _ = writeln!(out, "esr_ingest_regions_unlabelled {}", doc.streams.len() - labelled.len());
    let per_region: [(&str, &str, &str, RegionValue); 6] = [
        ("esr_ingest_held_files", "gauge", "Files held until an earlier SEQ is processed.", |s, _| {
            Some(s.held.len() as f64)
        }),
        (
            "esr_ingest_gap_age_seconds",
            "gauge",
            "How long the stream has waited for its next SEQ (0 when not waiting).",
            |s, now| Some(s.waiting_since.as_deref().and_then(|t| seconds_since(t, now)).unwrap_or(0.0)),
        ),
        ("esr_ingest_gap_alert", "gauge", "1 when the stream has waited longer than gap_alert_after.", |s, _| {
            Some(f64::from(u8::from(s.gap_alert)))
        }),
        ("esr_ingest_late_alert", "gauge", "1 when the expected file has not arrived by its deadline.", |s, _| {
            Some(f64::from(u8::from(s.late_alert)))
        }),
        (
            "esr_ingest_last_file_timestamp_seconds",
            "gauge",
            "When the region's latest file was first listed.",
            |s, _| {
                s.last_file_at
                    .as_deref()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.timestamp_millis() as f64 / 1000.0)
            },
        ),
        (
            "esr_ingest_seconds_since_last_file",
            "gauge",
            "Seconds since the region's latest file was first listed.",
            |s, now| s.last_file_at.as_deref().and_then(|t| seconds_since(t, now)),
        ),
    ];
    for (name, kind, help, value) in per_region {
        family(out, name, kind, help);
        for s in labelled {
            if let Some(v) = value(s, now) {
                let _ = writeln!(out, "{name}{{region=\"{}\"}} {v}", label(&s.region));
            }
        }
    }
}
