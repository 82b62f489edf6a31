//! The service's pass loop: a pass, the alert check, then files in flight followed until
//! the next pass is due.
//!
//! Invariant: a full pass (every object listed and checked) runs first and then at least
//! every `reconcile_interval`; the passes in between look only at new names and active
//! files, or at the keys event notifications named. So whatever a quick pass cannot see
//! (a settled file uploaded again in place, a lost notification) is seen within one
//! `reconcile_interval`.

use super::log_pass;
use crate::adapters::s3_events::Announced;
use crate::engine::handoff::Announcement;
use crate::engine::status::StatusRules;
use crate::engine::{Engine, EngineError, Scope};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often files in flight are checked for completion between passes.
const COMPLETION_CHECK: Duration = Duration::from_millis(500);

/// How often an instance with events and leases looks for keys handed off to it.
const HANDED_OFF_CHECK: Duration = Duration::from_secs(2);

/// When passes run and what each lists.
pub(super) struct Cadence {
    /// The pause between passes that nothing wakes.
    pub interval: Duration,
    /// How often a pass is a full one.
    pub reconcile: Duration,
    /// The keys event notifications announced, and the wake-up they send.
    pub announced: Arc<Announced>,
    /// Whether notifications are configured: passes between reconciles then look only
    /// at the keys announced.
    pub events: bool,
}

impl Cadence {
    /// The next pass's scope: full first and every `reconcile`; in between, the keys
    /// announced (with events) or a quick listing. With it, what a full pass took of the
    /// announced keys (it lists this instance's regions; the keys of regions other
    /// instances drive are handed to them after it, `engine::handoff`).
    fn scope(&self, now: Instant, last_full: Option<Instant>) -> (Scope, Announcement) {
        let taken = self.announced.take();
        let full_due = last_full.is_none_or(|t| now.saturating_duration_since(t) >= self.reconcile);
        match (full_due, self.events, taken) {
            (true, _, Some(keys)) if keys.is_empty() => (Scope::Full, Announcement::Nothing),
            (true, _, Some(keys)) => (Scope::Full, Announcement::Keys(keys)),
            (_, _, None) => (Scope::Full, Announcement::Everything),
            (false, false, Some(_)) => (Scope::Quick, Announcement::Nothing),
            (false, true, Some(keys)) => (Scope::Keys(keys), Announcement::Nothing),
        }
    }

    /// When the next pass runs unless something wakes it, after a pass that `failed` or
    /// not: one `interval` after `now`, but never later than the next full pass is due,
    /// whatever the interval (a full pass already due runs at once, once: it either
    /// succeeds and moves the due time on, or fails). After a failure, always one
    /// `interval`: a pass that keeps failing never runs back to back.
    fn next_pass(&self, now: Instant, last_full: Option<Instant>, failed: bool) -> Instant {
        let next = now + self.interval;
        match last_full {
            Some(t) if !failed => next.min(t + self.reconcile).max(now),
            _ => next,
        }
    }
}

/// Runs passes every `cadence.interval` (or when an event announces keys) until `cancel`.
/// With events and region leases (several instances may share the notifications), it
/// also takes, every [`HANDED_OFF_CHECK`], the keys other instances heard of for the
/// regions held here (`engine::handoff`); they wake the pass as an event would.
pub(super) async fn run(
    engine: &Engine,
    cadence: &Cadence,
    rules: &StatusRules,
    notify: bool,
    cancel: &CancellationToken,
) {
    let passes = pass_loop(engine, cadence, rules, notify, cancel);
    if cadence.events && engine.ownership.is_some() {
        // The passes end the loop (at the shutdown, once the file in hand is finished or
        // abandoned); the watcher never ends on its own, so it can never cut a pass short.
        tokio::select! {
            () = passes => {}
            () = take_handed_off(engine, &cadence.announced) => {}
        }
    } else {
        passes.await;
    }
}

/// Every [`HANDED_OFF_CHECK`], takes the keys handed off to this instance and announces
/// them here, until the passes end. Its own clock: events and passes do not put it off.
async fn take_handed_off(engine: &Engine, wake: &Announced) {
    let mut every = tokio::time::interval(HANDED_OFF_CHECK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match engine.take_handed_off().await {
            Ok(Announcement::Nothing) => {}
            Ok(Announcement::Keys(keys)) => {
                tracing::debug!(keys = keys.len(), "keys handed off by another instance");
                wake.add(keys);
            }
            Ok(Announcement::Everything) => wake.add_everything(),
            Err(e) => tracing::warn!(error = %e, "reading the keys handed off by other instances failed"),
        }
    }
}

/// After a full pass: the announced keys it took (see [`Cadence::scope`]) of regions other
/// instances drive go to them; when the pass failed, the keys also wait here for the
/// next one.
async fn hand_off_leftover(engine: &Engine, cadence: &Cadence, leftover: Announcement, passed: bool) {
    let handed = match leftover {
        Announcement::Nothing => return,
        Announcement::Keys(keys) => {
            let handed = engine.hand_off_unowned(&keys).await;
            if !passed {
                cadence.announced.give_back(keys);
            }
            handed
        }
        Announcement::Everything => engine.hand_off_everything_elsewhere().await,
    };
    if let Err(e) = handed {
        tracing::warn!(error = %e, "announced keys of regions driven elsewhere not handed off; that instance's next full listing finds them");
    }
}

/// The passes of [`run`].
async fn pass_loop(engine: &Engine, cadence: &Cadence, rules: &StatusRules, notify: bool, cancel: &CancellationToken) {
    let wake = &cadence.announced;
    let mut last_full: Option<Instant> = None;
    while !cancel.is_cancelled() {
        let (scope, leftover) = cadence.scope(Instant::now(), last_full);
        let started = Instant::now();
        let result = engine.pass_over(&scope, cancel).await;
        hand_off_leftover(engine, cadence, leftover, result.is_ok()).await;
        let seconds = started.elapsed().as_secs_f64();
        crate::telemetry::metrics::pass_duration(listing(&scope), seconds);
        tracing::debug!(listing = listing(&scope), seconds, "pass over");
        if let Scope::Keys(keys) = &scope
            && !result.as_ref().is_ok_and(|r| r.deferred.is_empty())
        {
            wake.give_back(keys.iter().cloned()); // looked at again by the next pass
        }
        let failed = result.is_err();
        let in_flight = match result {
            Ok(report) => {
                if report.listed_everything {
                    last_full = Some(started); // the reconcile (a full pass, or too many keys)
                } else if report.needs_full_listing {
                    last_full = None; // a baseline or an automatic skip to decide: a full pass now
                    wake.wake_again();
                }
                log_pass(&report);
                let completed = engine.complete_deliveries(cancel).await;
                if let Err(e) = &completed {
                    tracing::warn!(error = %e, "checking files in flight failed");
                }
                engine.heartbeat.pass_done(report.deferred.is_empty() && completed.is_ok());
                engine.check_alerts(rules, notify).await;
                completed.map(|waiting| !waiting.is_empty()).unwrap_or(true)
            }
            Err(EngineError::Cancelled) => break,
            Err(e) => {
                tracing::error!(error = %e, "pass failed; trying again after the poll interval");
                engine.heartbeat.pass_done(false);
                false
            }
        };
        let next_pass = tokio::time::Instant::from_std(cadence.next_pass(Instant::now(), last_full, failed));
        if in_flight {
            follow_deliveries(engine, next_pass, wake, cancel).await;
        }
        tokio::select! {
            () = tokio::time::sleep_until(next_pass) => {}
            () = wake.woken() => {}
            () = cancel.cancelled() => {}
        }
    }
}

/// The metric label of a scope.
fn listing(scope: &Scope) -> &'static str {
    match scope {
        Scope::Full => "full",
        Scope::Quick => "quick",
        Scope::Keys(_) => "keys",
    }
}

/// Between passes, marks delivered files applied as soon as the consumers have accounted
/// for all their lines, rather than at the next pass. Returns when nothing is in flight,
/// the next pass is due, an event asks for one, or on shutdown.
async fn follow_deliveries(
    engine: &Engine,
    next_pass: tokio::time::Instant,
    wake: &Announced,
    cancel: &CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(COMPLETION_CHECK) => {}
            () = tokio::time::sleep_until(next_pass) => return,
            () = wake.woken() => {
                wake.wake_again(); // keep the request for the caller's wait
                return;
            }
            () = cancel.cancelled() => return,
        }
        match engine.complete_deliveries(cancel).await {
            Ok(waiting) if waiting.is_empty() => return,
            Ok(_) => {}
            Err(EngineError::Cancelled) => return,
            Err(e) => tracing::warn!(error = %e, "checking files in flight failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cadence(interval: u64, reconcile: u64, events: bool) -> Cadence {
        Cadence {
            interval: Duration::from_secs(interval),
            reconcile: Duration::from_secs(reconcile),
            announced: Arc::new(Announced::default()),
            events,
        }
    }

    #[test]
    fn full_passes_are_never_further_apart_than_the_reconcile_interval() {
        // An interval longer than the reconcile interval, and one that does not divide it.
        for (interval, reconcile) in [(600, 300), (7, 30), (10, 10), (1, 300)] {
            let c = cadence(interval, reconcile, false);
            let start = Instant::now();
            let (mut now, mut last_full, mut full_at) = (start, None, Vec::new());
            while now < start + Duration::from_secs(3 * reconcile) {
                if c.scope(now, last_full).0 == Scope::Full {
                    full_at.push(now);
                    last_full = Some(now);
                }
                now = c.next_pass(now, last_full, false);
            }
            assert_eq!(full_at.first(), Some(&start), "the first pass is full");
            for pair in full_at.windows(2) {
                assert!(
                    pair[1] - pair[0] <= c.reconcile,
                    "interval {interval} s, reconcile {reconcile} s: {full_at:?}"
                );
            }
        }
    }

    #[test]
    fn a_pass_that_failed_or_ran_past_the_due_full_pass_never_starts_the_next_in_the_past() {
        let c = cadence(10, 30, false);
        let now = Instant::now();
        let overdue = Some(now - Duration::from_secs(45)); // the last full pass is 45 s old
        assert_eq!(c.next_pass(now, overdue, true), now + c.interval, "after a failure: one interval");
        assert_eq!(c.next_pass(now, overdue, false), now, "a full pass already due: at once");
        assert_eq!(c.next_pass(now, Some(now - Duration::from_secs(25)), false), now + Duration::from_secs(5));
        assert_eq!(c.next_pass(now, None, true), now + c.interval);
    }

    #[test]
    fn between_reconciles_passes_are_quick_or_over_the_keys_announced() {
        let now = Instant::now();
        let just_now = Some(now);
        assert_eq!(cadence(10, 300, false).scope(now, just_now).0, Scope::Quick);
        let c = cadence(10, 300, true);
        let key = "a/DE_SEV_RMC_20220730_00000001.DAT".to_string();
        c.announced.add([key.clone()]);
        assert_eq!(c.scope(now, just_now).0, Scope::Keys(vec![key.clone()]));
        assert_eq!(c.scope(now, None).0, Scope::Full);
    }

    #[test]
    fn a_full_pass_keeps_the_announced_keys_it_took_to_hand_off() {
        let now = Instant::now();
        let c = cadence(10, 300, true);
        let key = "a/DE_SEV_RMC_20220730_00000001.DAT".to_string();
        c.announced.add([key.clone()]);
        assert_eq!(c.scope(now, None), (Scope::Full, Announcement::Keys(vec![key])));
        c.announced.add_everything();
        assert_eq!(c.scope(now, Some(now)), (Scope::Full, Announcement::Everything));
    }
}
