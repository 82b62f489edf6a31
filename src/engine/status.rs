//! The status document (`status --json`, contract §5).

use super::completion::InFlightFile;
use super::streams::build_streams;
use crate::core::expectation::{Expectation, LOOKBACK_DAYS, for_region};
use crate::core::ledger::FileState;
use crate::core::sequencer::{Awaiting, SequenceRules};
use crate::ports::store::{AuditEntry, Counts, RegionHistory, Snapshot};

/// How many audit entries `status` shows.
pub const RECENT_ACTIONS: usize = 10;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use std::collections::HashMap;

/// What `status` judges streams by: the sequencing rules and the arrival expectations.
#[derive(Clone, Debug, Default)]
pub struct StatusRules {
    pub sequence: SequenceRules,
    pub expectations: Vec<Expectation>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StatusDoc {
    pub generated_at: String,
    pub streams: Vec<StreamStatus>,
    pub quarantined: Vec<QuarantinedFile>,
    /// Files handed to the broker whose records the consumers have not all applied yet.
    pub in_flight: Vec<InFlightFile>,
    pub counts: StatusCounts,
    /// The most recent operator actions and automatic skips, newest first.
    pub recent_actions: Vec<AuditEntry>,
    /// Region leases (several instances on one store): who drives which region.
    pub leases: Vec<LeaseStatus>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LeaseStatus {
    pub lease: String,
    pub owner: String,
    pub token: u64,
    pub expires_at: String,
    /// Unexpired at the time of the document.
    pub held: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct StreamStatus {
    pub region: String,
    pub next_seq: Option<u64>,
    pub held: Vec<u64>,
    pub waiting_since: Option<String>,
    pub gap_alert: bool,
    /// Why the stream waits: `missing SEQ n` or `quarantined SEQ n (file)`; null when it is not waiting.
    pub waiting_for: Option<String>,
    pub last_applied_seq: Option<u64>,
    pub skipped: Vec<u64>,
    /// When the region's most recent file arrived (was first listed).
    pub last_file_at: Option<String>,
    /// The region's expected file has not arrived by its deadline (`[[expect]]`).
    pub late_alert: bool,
    /// The deadline that passed without a file, when `late_alert`.
    pub late_since: Option<String>,
    /// The next deadline, when an expectation covers the region.
    pub expected_by: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct QuarantinedFile {
    pub file: String,
    pub reason: String,
    pub region: Option<String>,
    pub seq: Option<u64>,
    pub since: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct StatusCounts {
    #[serde(flatten)]
    pub totals: Counts,
    pub quarantined_files: u64,
    pub pending_files: u64,
}

impl StreamStatus {
    /// A region with no file yet.
    pub fn empty(region: &str) -> Self {
        StreamStatus {
            region: region.to_string(),
            next_seq: None,
            held: Vec::new(),
            waiting_since: None,
            gap_alert: false,
            waiting_for: None,
            last_applied_seq: None,
            skipped: Vec::new(),
            last_file_at: None,
            late_alert: false,
            late_since: None,
            expected_by: None,
        }
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// What the status document is built from: the store's active state and what it
/// aggregates of the history (never the settled ledger itself).
pub struct StatusInputs<'a> {
    /// The active ledger and every stream ([`crate::ports::store::Store::active`]).
    pub snapshot: &'a Snapshot,
    pub counts: Counts,
    /// The most recent audit entries, oldest first.
    pub recent_audit: &'a [AuditEntry],
    /// Per region, arrivals since `now` - [`LOOKBACK_DAYS`].
    pub history: &'a [RegionHistory],
    pub in_flight: Vec<InFlightFile>,
}

/// Builds the status document at `now`.
pub fn status_doc(inputs: StatusInputs<'_>, rules: &StatusRules, now: DateTime<Utc>) -> StatusDoc {
    let StatusInputs { snapshot, counts, recent_audit, history, in_flight } = inputs;
    let built = build_streams(&snapshot.ledger, &snapshot.streams, None);
    let history: HashMap<&str, &RegionHistory> = history.iter().map(|h| (h.region.as_str(), h)).collect();
    let mut streams: Vec<StreamStatus> = built
        .values()
        .map(|s| {
            let v = s.view(now, &rules.sequence);
            StreamStatus {
                last_applied_seq: history.get(v.region.as_str()).and_then(|h| h.last_processed_seq),
                waiting_for: v.awaiting.as_ref().map(|a| match a {
                    Awaiting::Missing(seq) => format!("missing SEQ {seq}"),
                    Awaiting::Quarantined { seq, file } => format!("quarantined SEQ {seq} ({file})"),
                }),
                region: v.region,
                next_seq: v.next_seq,
                held: v.held,
                waiting_since: v.waiting_since.map(rfc3339),
                gap_alert: v.gap_alert,
                skipped: v.skipped,
                last_file_at: None,
                late_alert: false,
                late_since: None,
                expected_by: None,
            }
        })
        .collect();
    // Named regions that have never sent a file are streams too: their absence is the news.
    for e in &rules.expectations {
        if let crate::core::expectation::RegionSet::Named(names) = &e.regions {
            for name in names {
                if !streams.iter().any(|s| &s.region == name) {
                    streams.push(StreamStatus::empty(name));
                }
            }
        }
    }
    streams.sort_by(|a, b| a.region.cmp(&b.region));
    for stream in &mut streams {
        let h = history.get(stream.region.as_str());
        stream.last_file_at = h.and_then(|h| h.last_arrival).map(rfc3339);
        if let Some(expectation) = for_region(&rules.expectations, &stream.region) {
            let since = h
                .and_then(|h| h.first_arrival)
                .map(|first| first - chrono::Duration::milliseconds(1))
                .unwrap_or(now - chrono::Duration::days(LOOKBACK_DAYS));
            let seen = h.map(|h| h.recent_arrivals.as_slice()).unwrap_or_default();
            let verdict = expectation.evaluate(seen, since, now);
            stream.late_alert = verdict.late();
            stream.late_since = verdict.missed.map(rfc3339);
            stream.expected_by = verdict.next_deadline.map(rfc3339);
        }
    }
    let mut quarantined = Vec::new();
    for e in &snapshot.ledger {
        if e.state == FileState::Quarantined {
            quarantined.push(QuarantinedFile {
                file: e.name.clone(),
                reason: e.reason.clone().unwrap_or_default(),
                region: e.region().map(str::to_string),
                seq: e.seq(),
                since: rfc3339(e.updated_at),
            });
        }
        if let Some(c) = e.conflict.as_ref().filter(|_| e.state != FileState::Quarantined) {
            quarantined.push(QuarantinedFile {
                file: e.name.clone(),
                reason: c.reason.clone(),
                region: e.region().map(str::to_string),
                seq: e.seq(),
                since: rfc3339(c.at),
            });
        }
    }
    let pending = snapshot.ledger.iter().filter(|e| e.state == FileState::Pending).count() as u64;
    StatusDoc {
        generated_at: rfc3339(now),
        streams,
        counts: StatusCounts { totals: counts, quarantined_files: quarantined.len() as u64, pending_files: pending },
        quarantined,
        in_flight,
        recent_actions: recent_audit.iter().rev().take(RECENT_ACTIONS).cloned().collect(),
        leases: Vec::new(),
    }
}

/// Reads everything `status` shows from the store and builds the document.
pub async fn collect(
    store: &dyn crate::ports::store::Store,
    rules: &StatusRules,
    now: DateTime<Utc>,
) -> Result<StatusDoc, super::EngineError> {
    Ok(collect_with_snapshot(store, rules, now).await?.0)
}

/// The status document and the snapshot it was built from.
pub async fn collect_with_snapshot(
    store: &dyn crate::ports::store::Store,
    rules: &StatusRules,
    now: DateTime<Utc>,
) -> Result<(StatusDoc, Snapshot), super::EngineError> {
    let snapshot = store.active().await?;
    let counts = store.counts().await?;
    let recent_audit = store.recent_audit(RECENT_ACTIONS).await?;
    let history = store.region_history(now - chrono::Duration::days(LOOKBACK_DAYS)).await?;
    let in_flight = super::completion::in_flight(store, &snapshot.ledger).await?;
    let inputs =
        StatusInputs { snapshot: &snapshot, counts, recent_audit: &recent_audit, history: &history, in_flight };
    let mut doc = status_doc(inputs, rules, now);
    doc.leases = store
        .leases()
        .await?
        .into_iter()
        .map(|l| LeaseStatus {
            held: l.expires_at > now,
            lease: l.name,
            owner: l.owner,
            token: l.token,
            expires_at: rfc3339(l.expires_at),
        })
        .collect();
    Ok((doc, snapshot))
}
