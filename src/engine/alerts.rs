//! Alert transitions and their notification, shared by every instance through the store.
//!
//! Invariants:
//! - An alert is a condition with a key (`gap/SEV`, `late/SEV`, `quarantine/<file>`,
//!   `dead-letters-growing`, `topology`). Only a *transition* — a key appearing or
//!   disappearing — produces a message; while a condition holds, nothing is repeated.
//! - The set of active conditions and the queue of unsent messages live in one shared
//!   document, changed by compare-and-set. Of several instances (or a restarted one) that
//!   see the same transition, exactly one records it, so it is queued once.
//! - A message is claimed (for [`CLAIM`]) before it is sent and removed after the receiver
//!   accepted it: a crash between sending and removing re-sends it once the claim lapses
//!   (at least once); nothing else sends it twice. Sending runs in its own task, with
//!   backoff and jitter, and never holds up ingestion.

use super::shared;
use super::status::StatusDoc;
use crate::ports::notify::AlertSink;
use crate::ports::store::{Store, StoreError};
use crate::telemetry::heartbeat::WorkerBeat;
use crate::telemetry::metrics;
use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The shared document's key.
pub const STATE_KEY: &str = "alerts";
/// How long a claimed message is left to its claimant before another may send it.
pub const CLAIM: TimeDelta = TimeDelta::seconds(60);

/// One message waiting to be sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outgoing {
    pub id: u64,
    pub text: String,
    pub created_at: DateTime<Utc>,
    pub attempts: u32,
    /// Not sent (or claimed) before this time: backoff, or someone's claim.
    pub not_before: DateTime<Utc>,
    pub claimed_by: Option<String>,
}

/// The shared alert state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertState {
    /// Active conditions: key → description.
    pub active: BTreeMap<String, String>,
    /// The dead-letter depth at the last check (for `dead-letters-growing`).
    pub dead_letter_depth: u64,
    pub outbox: Vec<Outgoing>,
    pub next_id: u64,
}

/// A condition appearing or disappearing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    Raised { key: String, text: String },
    Cleared { key: String, text: String },
}

impl Transition {
    pub fn message(&self) -> String {
        match self {
            Transition::Raised { key, text } => format!("[esr-ingest] ALERT {key}: {text}"),
            Transition::Cleared { key, text } => format!("[esr-ingest] RESOLVED {key}: {text}"),
        }
    }
}

/// What the broker said at this check, for the conditions about it.
#[derive(Clone, Debug, Default)]
pub struct BrokerView {
    pub dead_letter_depth: Option<u64>,
    /// The topology error, when the broker's topology differs from the configured one.
    pub topology_drift: Option<String>,
}

/// The conditions that hold now.
pub fn conditions(doc: &StatusDoc, broker: &BrokerView, previous_depth: u64) -> BTreeMap<String, String> {
    let mut on = BTreeMap::new();
    for s in &doc.streams {
        if s.gap_alert {
            let what = s.waiting_for.as_deref().unwrap_or("the next SEQ");
            let since = s.waiting_since.as_deref().unwrap_or("?");
            on.insert(format!("gap/{}", s.region), format!("{}: waiting for {what} since {since}", s.region));
        }
        if s.late_alert {
            let since = s.late_since.as_deref().unwrap_or("?");
            on.insert(format!("late/{}", s.region), format!("{}: no file by {since}", s.region));
        }
    }
    for q in &doc.quarantined {
        on.insert(format!("quarantine/{}", q.file), format!("{} quarantined: {}", q.file, q.reason));
    }
    if let Some(depth) = broker.dead_letter_depth
        && depth > previous_depth
    {
        on.insert(
            "dead-letters-growing".into(),
            format!(
                "the dead-letter queue grew from {previous_depth} to {depth} message(s); see `esr-ingest dlq list`"
            ),
        );
    }
    if let Some(drift) = &broker.topology_drift {
        on.insert("topology".into(), format!("the broker's topology differs from the configuration: {drift}"));
    }
    on
}

/// The transitions from `before` to `now`, in key order.
pub fn transitions(before: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<Transition> {
    let mut out: Vec<Transition> = now
        .iter()
        .filter(|(k, _)| !before.contains_key(*k))
        .map(|(k, t)| Transition::Raised { key: k.clone(), text: t.clone() })
        .collect();
    out.extend(
        before
            .iter()
            .filter(|(k, _)| !now.contains_key(*k))
            .map(|(k, t)| Transition::Cleared { key: k.clone(), text: t.clone() }),
    );
    out
}

/// Records the transitions since the last check (queueing messages when `queue`);
/// returns those this call recorded (another instance may have recorded them first).
pub async fn record(
    store: &dyn Store,
    doc: &StatusDoc,
    broker: &BrokerView,
    queue: bool,
    now: DateTime<Utc>,
) -> Result<Vec<Transition>, StoreError> {
    let changes = shared::update(store, STATE_KEY, |state: &mut AlertState| {
        let current = conditions(doc, broker, state.dead_letter_depth);
        let changes = transitions(&state.active, &current);
        let depth = broker.dead_letter_depth.unwrap_or(state.dead_letter_depth);
        if changes.is_empty() && depth == state.dead_letter_depth {
            return (false, Vec::new());
        }
        state.active = current;
        state.dead_letter_depth = depth;
        if queue {
            for t in &changes {
                state.next_id += 1;
                state.outbox.push(Outgoing {
                    id: state.next_id,
                    text: t.message(),
                    created_at: now,
                    attempts: 0,
                    not_before: now,
                    claimed_by: None,
                });
            }
        }
        (true, changes)
    })
    .await?;
    for t in &changes {
        match t {
            Transition::Raised { key, text } => tracing::warn!(alert = %key, "alert raised: {text}"),
            Transition::Cleared { key, text } => tracing::info!(alert = %key, "alert resolved: {text}"),
        }
    }
    Ok(changes)
}

/// The wait before attempt `attempts + 1`: 1 s doubling to 5 min, with jitter.
fn backoff(attempts: u32) -> TimeDelta {
    let mut delays = ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(300))
        .without_max_times()
        .build();
    let wait = delays.nth(attempts as usize).unwrap_or(Duration::from_secs(300));
    TimeDelta::from_std(wait).unwrap_or(TimeDelta::seconds(300))
}

/// Changes the message `id` in the shared state with `f` (`None` removes it).
async fn update_message(
    store: &dyn Store,
    id: u64,
    f: impl Fn(&Outgoing) -> Option<Outgoing>,
) -> Result<(), StoreError> {
    shared::update(store, STATE_KEY, |state: &mut AlertState| {
        let Some(pos) = state.outbox.iter().position(|m| m.id == id) else { return (false, ()) };
        match f(&state.outbox[pos]) {
            Some(m) => state.outbox[pos] = m,
            None => {
                state.outbox.remove(pos);
            }
        }
        (true, ())
    })
    .await
}

/// Sends the next message that is due, if any; returns whether one was attempted.
pub async fn send_next(
    store: &dyn Store,
    sink: &dyn AlertSink,
    instance: &str,
    give_up_after: TimeDelta,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let claim = shared::update(store, STATE_KEY, |state: &mut AlertState| {
        let Some(due) = state.outbox.iter_mut().find(|m| m.not_before <= now) else { return (false, None) };
        due.claimed_by = Some(instance.to_string());
        due.not_before = now + CLAIM;
        (true, Some(due.clone()))
    })
    .await?;
    let Some(claimed) = claim else { return Ok(false) };
    match sink.send(&claimed.text).await {
        Ok(()) => {
            metrics::notification("sent");
            tracing::info!(message = claimed.id, to = %sink.describe(), "alert notification sent");
            update_message(store, claimed.id, |_| None).await?;
        }
        Err(e) if e.is_transient() && now - claimed.created_at < give_up_after => {
            metrics::notification("failed");
            let wait = backoff(claimed.attempts);
            tracing::warn!(message = claimed.id, error = %e, retry_in_s = wait.num_seconds(), "alert notification failed; retrying");
            update_message(store, claimed.id, |m| {
                Some(Outgoing { attempts: m.attempts + 1, not_before: now + wait, claimed_by: None, ..m.clone() })
            })
            .await?;
        }
        Err(e) => {
            metrics::notification("given_up");
            tracing::error!(message = claimed.id, error = %e, text = %claimed.text, "alert notification given up");
            update_message(store, claimed.id, |_| None).await?;
        }
    }
    Ok(true)
}

impl super::Engine {
    /// Checks the alert conditions now and records their transitions (queueing messages
    /// when `queue`). Failures are logged: alerting never stops ingestion.
    pub async fn check_alerts(&self, rules: &super::status::StatusRules, queue: bool) {
        let now = self.clock.now();
        let doc = match super::status::collect(self.store.as_ref(), rules, now).await {
            Ok(doc) => doc,
            Err(e) => {
                tracing::warn!(error = %e, "alert check: the store did not answer");
                return;
            }
        };
        let broker = if self.delivery.asynchronous() {
            match self.delivery.probe().await {
                Ok(p) => BrokerView { dead_letter_depth: p.dead_letter_depth, topology_drift: None },
                Err(crate::ports::delivery::DeliveryError::Topology(t)) => {
                    BrokerView { dead_letter_depth: None, topology_drift: Some(t) }
                }
                Err(_) => BrokerView::default(), // unreachable: readiness says so; not an alert transition
            }
        } else {
            BrokerView::default()
        };
        if let Err(e) = record(self.store.as_ref(), &doc, &broker, queue, now).await {
            tracing::warn!(error = %e, "alert check: recording transitions failed");
        }
    }
}

/// How often the sender looks for due messages when idle.
const SEND_TICK: Duration = Duration::from_secs(1);

/// The sender task: sends due messages until `cancel`.
pub fn spawn_sender(
    store: Arc<dyn Store>,
    sink: Arc<dyn AlertSink>,
    instance: String,
    give_up_after: Duration,
    beat: Arc<WorkerBeat>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let give_up = TimeDelta::from_std(give_up_after).unwrap_or(TimeDelta::MAX);
    tokio::spawn(async move {
        while !cancel.is_cancelled() {
            beat.beat();
            let busy = match send_next(store.as_ref(), sink.as_ref(), &instance, give_up, Utc::now()).await {
                Ok(busy) => busy,
                Err(e) => {
                    tracing::warn!(error = %e, "alert notifications: the store did not answer; retrying");
                    false
                }
            };
            if !busy {
                tokio::select! { () = tokio::time::sleep(SEND_TICK) => {}, () = cancel.cancelled() => {} }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[(&str, &str)]) -> BTreeMap<String, String> {
        items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn only_changes_are_transitions() {
        let before = set(&[("gap/SEV", "a"), ("late/WES", "b")]);
        let now = set(&[("gap/SEV", "a (text changed)"), ("quarantine/F", "c")]);
        assert_eq!(
            transitions(&before, &now),
            vec![
                Transition::Raised { key: "quarantine/F".into(), text: "c".into() },
                Transition::Cleared { key: "late/WES".into(), text: "b".into() },
            ]
        );
        assert!(transitions(&now, &now).is_empty(), "a condition that holds is not repeated");
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert!(backoff(0) <= TimeDelta::seconds(2));
        assert!(backoff(30) <= TimeDelta::seconds(600));
        assert!(backoff(8) >= TimeDelta::seconds(60));
    }
}
