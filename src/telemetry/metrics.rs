//! Prometheus metrics.
//!
//! Two kinds, rendered together by `/metrics`:
//! - events of this process (confirms, retries by cause, passes, files it processed),
//!   counted where they happen through the `metrics` facade; no-ops in commands that do
//!   not serve metrics;
//! - the state of the store (records by outcome, held files, gap age, lateness per
//!   region, DLQ depth), read at scrape time, so every instance reports the same totals.
//!
//! Invariant: every label has a bounded set of values. Outcomes, causes and states are
//! closed sets of constants here; regions come from the stream table and at most
//! [`MAX_REGION_LABELS`] of them are labelled (the rest are counted in
//! `esr_ingest_regions_unlabelled`).

use crate::core::record::Tally;
use crate::engine::status::{StatusDoc, StreamStatus};
use chrono::{DateTime, Utc};
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::fmt::Write;
use std::sync::OnceLock;

/// The most regions that get their own label values.
pub const MAX_REGION_LABELS: usize = 200;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once; `None` if another recorder was installed.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new().install_recorder().ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!("esr_ingest_passes_total", "Discovery passes by result (ok, failed).");
    describe_gauge!("esr_ingest_last_discovery_timestamp_seconds", "When the last successful discovery pass ended.");
    describe_counter!(
        "esr_ingest_files_processed_total",
        "Files this process handled, by outcome (applied, delivered, duplicate, conflict, quarantined, deferred)."
    );
    describe_counter!("esr_ingest_publish_confirms_total", "Publisher confirms by result (ack, nack, lost).");
    describe_counter!("esr_ingest_retries_total", "Retries of transient failures, by cause.");
    describe_counter!("esr_ingest_consumer_messages_total", "Broker messages consumed, by result.");
    describe_counter!("esr_ingest_alert_notifications_total", "Alert webhook deliveries, by result.");
    describe_gauge!("esr_ingest_lease_regions_owned", "Region leases this instance holds.");
    describe_gauge!(
        "esr_ingest_broker_blocked",
        "1 while the broker blocks this connection (a memory or disk alarm): publishing waits."
    );
}

/// Why something was tried again: a closed set of label values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryCause {
    /// The store was busy: a lock, a WriteConflict, an election.
    StoreBusy,
    /// The store could not be reached or failed an I/O.
    StoreIo,
    SourceUnavailable,
    BrokerUnavailable,
    /// The broker did not confirm in time or the connection dropped mid-file.
    BrokerReconnect,
    Other,
}

impl RetryCause {
    pub fn label(self) -> &'static str {
        match self {
            RetryCause::StoreBusy => "store_busy",
            RetryCause::StoreIo => "store_io",
            RetryCause::SourceUnavailable => "source_unavailable",
            RetryCause::BrokerUnavailable => "broker_unavailable",
            RetryCause::BrokerReconnect => "broker_reconnect",
            RetryCause::Other => "other",
        }
    }
}

pub fn retry(cause: RetryCause) {
    counter!("esr_ingest_retries_total", "cause" => cause.label()).increment(1);
}

pub fn confirms(result: &'static str, n: u64) {
    counter!("esr_ingest_publish_confirms_total", "result" => result).increment(n);
}

pub fn consumed(result: &'static str, n: u64) {
    counter!("esr_ingest_consumer_messages_total", "result" => result).increment(n);
}

pub fn notification(result: &'static str) {
    counter!("esr_ingest_alert_notifications_total", "result" => result).increment(1);
}

pub fn file_processed(outcome: &'static str, n: usize) {
    if n > 0 {
        counter!("esr_ingest_files_processed_total", "outcome" => outcome).increment(n as u64);
    }
}

pub fn regions_owned(n: usize) {
    gauge!("esr_ingest_lease_regions_owned").set(n as f64);
}

/// Whether the broker blocks one of this process's connections (a resource alarm).
/// `connection` is one of the process's fixed connection names.
pub fn broker_blocked(connection: &str, blocked: bool) {
    gauge!("esr_ingest_broker_blocked", "connection" => connection.to_string()).set(if blocked { 1.0 } else { 0.0 });
}

pub fn pass_finished(ok: bool, at: DateTime<Utc>) {
    counter!("esr_ingest_passes_total", "result" => if ok { "ok" } else { "failed" }).increment(1);
    if ok {
        gauge!("esr_ingest_last_discovery_timestamp_seconds").set(at.timestamp_millis() as f64 / 1000.0);
    }
}

/// What the broker says at scrape time, when there is one.
#[derive(Clone, Debug, Default)]
pub struct BrokerGauges {
    pub reachable: bool,
    pub dead_letter_depth: Option<u64>,
}

/// The process's metrics followed by the store's state at `now`, in Prometheus text.
pub fn render(doc: Option<&StatusDoc>, broker: Option<&BrokerGauges>, now: DateTime<Utc>) -> String {
    let mut out = install().map(|h| h.render()).unwrap_or_default();
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
