//! Prometheus metrics.
//!
//! Events of this process (confirms, retries by cause, passes, files it processed),
//! counted where they happen through the `metrics` facade; no-ops in commands that do
//! not serve metrics. `/metrics` renders them followed by the store's state
//! (`health::prometheus`).
//!
//! Invariant: every label has a bounded set of values: outcomes, causes and states are
//! closed sets of constants.

use crate::ports::RetryCause;
use chrono::{DateTime, Utc};
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

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
    describe_gauge!(
        "esr_ingest_last_pass_seconds",
        "How long the last pass took, by what it listed (full, quick: new names and active files, keys: those notified)."
    );
    describe_counter!(
        "esr_ingest_files_processed_total",
        "Files this process handled, by outcome (applied, delivered, duplicate, conflict, quarantined, deferred)."
    );
    describe_counter!("esr_ingest_publish_confirms_total", "Publisher confirms by result (ack, nack, lost).");
    describe_counter!("esr_ingest_retries_total", "Retries of transient failures, by cause.");
    describe_counter!("esr_ingest_consumer_messages_total", "Broker messages consumed, by result.");
    describe_counter!("esr_ingest_alert_notifications_total", "Alert webhook deliveries, by result.");
    describe_gauge!("esr_ingest_lease_regions_owned", "Region leases this instance holds.");
    describe_counter!(
        "esr_ingest_store_commands_total",
        "Commands sent to the MongoDB store, by command and collection (round trips, not time)."
    );
    describe_gauge!(
        "esr_ingest_broker_blocked",
        "1 while the broker blocks this connection (a memory or disk alarm): publishing waits."
    );
}

pub fn retry(cause: RetryCause) {
    counter!("esr_ingest_retries_total", "cause" => cause.label()).increment(1);
}

pub fn store_command(command: &'static str, collection: &'static str) {
    counter!("esr_ingest_store_commands_total", "command" => command, "collection" => collection).increment(1);
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

/// How long a pass took; `listing` is one of `full`, `quick`, `keys`.
pub fn pass_duration(listing: &'static str, seconds: f64) {
    gauge!("esr_ingest_last_pass_seconds", "listing" => listing).set(seconds);
}
