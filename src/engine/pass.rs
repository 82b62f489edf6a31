//! One discovery-and-apply pass.

use super::discovery::{Scope, Seen};
use super::group::{Grouped, Pacing, file_span, log_applied};
use super::streams::build_streams;
use super::{Engine, EngineError, FileOutcome, PassReport};
use crate::core::ledger::{LedgerEntry, Listed};
use crate::core::sequencer::{Apply, SequenceRules, Stream};
use crate::ports::store::{AuditEntry, Commit};
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap, HashSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How many regions are driven concurrently in a pass.
const REGIONS_AT_ONCE: usize = 4;

impl Engine {
    /// A full pass: lists every object, records what is new, and applies everything the
    /// sequencer allows.
    pub async fn pass(&self, cancel: &CancellationToken) -> Result<PassReport, EngineError> {
        self.pass_over(&Scope::Full, cancel).await
    }

    /// A pass that lists the source as `scope` says, then records what is new and applies
    /// everything the sequencer allows.
    pub async fn pass_over(&self, scope: &Scope, cancel: &CancellationToken) -> Result<PassReport, EngineError> {
        let mut report = PassReport::default();
        let super::discovery::Loaded { objects, ledger, streams, discovered, seen, .. } =
            self.load(scope, &mut report, cancel).await?;
        report.listed_everything = seen == Seen::Everything;
        let partial = seen == Seen::SomeKeys;
        self.commit_discovered(discovered, cancel).await?;
        self.heartbeat.beat();

        let present: HashSet<String> = objects.keys().cloned().collect();
        let mut streams = build_streams(ledger.values(), &streams, Some(&present));
        streams.retain(|region, _| self.owns(Some(region)));
        // A baseline is "the lowest SEQ of the first pass": it is saved at once, so a file
        // deferred now cannot let a later pass pick another one.
        // Only a pass that saw every name may set one: after a pass over notified keys
        // alone, a new region waits for a full pass, which it asks for.
        let mut baselines = BTreeMap::new();
        for stream in streams.values_mut() {
            let start = self.rules.start.get(stream.region()).copied();
            if partial && start.is_none() && stream.record().next_seq.is_none() && stream.has_files() {
                report.needs_full_listing = true;
                continue;
            }
            if stream.ensure_baseline(start) {
                tracing::info!(region = stream.region(), next_seq = stream.next_seq(), "stream baseline set");
                let commit = Commit { streams: vec![stream.record().clone()], ..Default::default() };
                baselines.insert(Some(stream.region().to_string()), commit);
            }
        }
        self.commit_discovered(baselines, cancel).await?;
        streams.retain(|region, _| self.owns(Some(region)));
        // Regions are independent streams: drive a few at once, so one region's
        // validation pass overlaps another's store writes. Each region gets its own share of
        // the ledger (a file belongs to exactly one region).
        let mut shares: HashMap<String, HashMap<String, LedgerEntry>> = HashMap::new();
        for (name, entry) in ledger {
            let region = entry.region().unwrap_or_default().to_string();
            shares.entry(region).or_default().insert(name, entry);
        }
        let objects = &objects;
        let results: Vec<Result<PassReport, (String, EngineError)>> = futures::stream::iter(streams.into_values())
            .map(|mut stream| {
                let mut share = shares.remove(stream.region()).unwrap_or_default();
                async move {
                    let mut part = PassReport::default();
                    match self.drive_stream(&mut stream, (objects, partial), &mut share, &mut part, cancel).await {
                        Ok(()) => Ok(part),
                        Err(e) => Err((stream.region().to_string(), e)),
                    }
                }
            })
            .buffer_unordered(REGIONS_AT_ONCE)
            .collect()
            .await;
        for part in results {
            let part = match part {
                Err((region, e)) if e.is_fenced() => {
                    self.lost(Some(&region), &e);
                    continue;
                }
                other => other.map_err(|(_, e)| e)?,
            };
            report.needs_full_listing |= part.needs_full_listing;
            report.applied.extend(part.applied);
            report.quarantined.extend(part.quarantined);
            report.deferred.extend(part.deferred);
        }
        Ok(report)
    }

    /// Applies a region's files in order until it has to wait: several in one unit of work
    /// where the delivery allows it (`engine::group`), otherwise one at a time.
    /// `partial`: the listing did not look at every name, so no SEQ is judged missing (an
    /// automatic skip that falls due asks for a full pass instead).
    async fn drive_stream(
        &self,
        stream: &mut Stream,
        (objects, partial): (&BTreeMap<String, Listed>, bool),
        ledger: &mut HashMap<String, LedgerEntry>,
        report: &mut PassReport,
        cancel: &CancellationToken,
    ) -> Result<(), EngineError> {
        let region = stream.region().to_string();
        let saved = stream.record().clone();
        let mut pacing = Pacing::default();
        loop {
            while let Some(action) = stream.next_action() {
                if cancel.is_cancelled() {
                    return Err(EngineError::Cancelled);
                }
                let (most, retrying) = pacing.next();
                if most > 0 {
                    let shares = (objects, &mut *ledger);
                    let grouped = self.apply_group(stream, &action, shares, (most, retrying), report, cancel).await?;
                    pacing.after(&grouped);
                    match grouped {
                        Grouped::Applied => {
                            self.heartbeat.beat();
                            continue;
                        }
                        Grouped::Alone => {}
                        Grouped::Failed { .. } => continue,
                        Grouped::Deferred { file, error } => {
                            report.deferred.push((file, error.to_string()));
                            return Ok(());
                        }
                    }
                }
                let span = file_span(&region, &action);
                let go_on = self.apply_one(stream, &action, objects, ledger, report, cancel).instrument(span).await?;
                if !go_on {
                    return Ok(());
                }
                self.heartbeat.beat();
            }
            // The stream has to wait: note since when, and apply the automatic skip if due.
            let now = self.clock.now();
            let never_skip;
            let rules = match partial {
                false => &self.rules,
                true => {
                    if !stream.clone().refresh(now, &self.rules).is_empty() {
                        report.needs_full_listing = true;
                    }
                    never_skip = SequenceRules { auto_skip_after: None, ..self.rules.clone() };
                    &never_skip
                }
            };
            let auto_skipped = stream.refresh(now, rules);
            if let Some(width) = stream.auto_skip_refused(now, rules) {
                tracing::warn!(
                    region = %region,
                    next_seq = stream.next_seq(),
                    width,
                    "gap too wide for the automatic skip; an operator must run `sequence skip`"
                );
            }
            let mut commit = Commit::default();
            for seq in &auto_skipped {
                let detail = format!("automatic skip: waited longer than auto_skip_after for SEQ {seq}");
                tracing::warn!(region = %region, seq, "{detail}");
                commit.audit.push(AuditEntry {
                    at: self.clock.now(),
                    actor: "esr-ingest".into(),
                    action: "sequence skip".into(),
                    region: Some(region.clone()),
                    seq: Some(*seq),
                    detail,
                });
            }
            if stream.record() != &saved || !commit.audit.is_empty() {
                commit.streams.push(stream.record().clone());
                commit.fence = self.fence(Some(&region));
                self.commit(commit, cancel).await?;
            }
            if auto_skipped.is_empty() {
                return Ok(());
            }
        }
    }

    /// Processes and commits one file the sequencer chose. Returns false when the region
    /// must wait for a later pass (the file was deferred).
    async fn apply_one(
        &self,
        stream: &mut Stream,
        action: &Apply,
        objects: &BTreeMap<String, Listed>,
        ledger: &mut HashMap<String, LedgerEntry>,
        report: &mut PassReport,
        cancel: &CancellationToken,
    ) -> Result<bool, EngineError> {
        let (Some(entry), Some(listed)) = (ledger.get(&action.name), objects.get(&action.name)) else {
            return Ok(false);
        };
        let outcome = match self.process_file(entry, listed, cancel).await {
            Ok(outcome) => outcome,
            Err(EngineError::Cancelled) => return Err(EngineError::Cancelled),
            // A source error belongs to this object alone (unreadable, vanished, not a
            // regular file): its region waits for it, every other region goes on.
            Err(e) if e.is_transient() || matches!(e, EngineError::Source(_)) => {
                tracing::warn!(error = %e, "file deferred to the next pass");
                report.deferred.push((action.name.clone(), e.to_string()));
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        match outcome {
            FileOutcome::Delivered { delivery, entry } => {
                stream.applied(&action.name, action.seq);
                let entry = match self.commit_file(delivery, entry, vec![stream.record().clone()]).await {
                    Ok(entry) => entry,
                    Err(e) => {
                        tracing::warn!(error = %e, "file not committed; deferred to the next pass");
                        report.deferred.push((action.name.clone(), e.to_string()));
                        return if e.is_transient() || e.is_superseded() { Ok(false) } else { Err(e) };
                    }
                };
                log_applied(&entry.tally, stream.next_seq(), 1);
                ledger.insert(action.name.clone(), entry);
                report.applied.push(action.name.clone());
            }
            FileOutcome::Quarantined { entry } => {
                stream.quarantined(&action.name, action.seq);
                let reason = entry.reason.clone().unwrap_or_default();
                let commit = Commit {
                    ledger: vec![entry.clone()],
                    streams: vec![stream.record().clone()],
                    fence: self.fence(Some(stream.region())),
                    ..Default::default()
                };
                self.commit(commit, cancel).await?;
                tracing::warn!(%reason, "file quarantined; its stream waits at this SEQ");
                ledger.insert(action.name.clone(), entry);
                report.quarantined.push(action.name.clone());
            }
        }
        self.heartbeat.beat();
        Ok(true)
    }
}
