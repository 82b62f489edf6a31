//! Backfill: process the files of a date range per region in SEQ order under the version
//! rule. It never moves a stream's expected SEQ (stream records are not written), so it is
//! safe to run at any time: re-applying a line is a no-op.

use super::group::{FileList, Grouped, Pacing, UnitOrder};
use super::{Engine, EngineError, FileOutcome, PassReport};
use crate::core::ledger::{FileState, LedgerEntry, Listed};
use crate::core::name::NameVerdict;
use crate::core::record::Tally;
use crate::core::sequencer::Apply;
use crate::ports::store::Commit;
use chrono::NaiveDate;
use std::collections::{BTreeMap, HashMap};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// One file a backfill would process, and why it would not.
#[derive(Clone, Debug)]
pub struct BackfillFile {
    pub region: String,
    pub seq: u64,
    pub date: NaiveDate,
    pub name: String,
    pub state: FileState,
    /// Set when the file is left out (a conflict, or a known file-level fault).
    pub excluded: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct BackfillPlan {
    pub files: Vec<BackfillFile>,
}

#[derive(Clone, Debug, Default)]
pub struct BackfillReport {
    pub processed: u64,
    pub quarantined: Vec<(String, String)>,
    pub excluded: Vec<(String, String)>,
    pub tally: Tally,
    pub by_region: Vec<(String, u64, Tally)>,
}

impl Engine {
    /// Lists the source and selects the files of the range. With `record_new`, names not
    /// seen before are recorded in the ledger (a dry run writes nothing).
    pub async fn backfill_plan(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        regions: &[String],
        record_new: bool,
        cancel: &CancellationToken,
    ) -> Result<(BackfillPlan, HashMap<String, (LedgerEntry, Listed)>), EngineError> {
        let loaded = self.load(&super::discovery::Scope::Full, &mut super::PassReport::default(), cancel).await?;
        let (objects, mut ledger) = (loaded.objects, loaded.ledger);
        if record_new {
            self.commit_discovered(loaded.discovered, cancel).await?;
        }
        // The pass read no settled entry: read those of the range now.
        let in_range = |listed: &Listed| match self.profile.classify(&listed.key) {
            NameVerdict::Batch(b) => {
                b.date >= from && b.date <= to && (regions.is_empty() || regions.contains(&b.region))
            }
            _ => false,
        };
        let wanted: Vec<String> =
            loaded.settled.iter().filter(|n| objects.get(*n).is_some_and(in_range)).cloned().collect();
        if !wanted.is_empty() {
            let found = super::retry::retry_transient("reading the store", cancel, || async {
                Ok(self.store.ledger_lookup(wanted.clone(), Vec::new()).await?)
            })
            .await?;
            ledger.extend(found.into_iter().map(|e| (e.name.clone(), e)));
        }
        let mut plan = BackfillPlan::default();
        let mut work = HashMap::new();
        for (name, listed) in &objects {
            let Some(entry) = ledger.get(name) else { continue };
            let Some(b) = &entry.batch else { continue };
            if b.date < from || b.date > to || (!regions.is_empty() && !regions.contains(&b.region)) {
                continue;
            }
            let excluded = if let Some(c) = &entry.conflict {
                Some(c.reason.clone())
            } else if entry.state == FileState::Quarantined {
                Some(format!("quarantined: {}", entry.reason.clone().unwrap_or_default()))
            } else if entry.unfinished_delivery().is_some() {
                Some("a delivery of it started and has not finished; `run` finishes it".to_string())
            } else if entry.state == FileState::Delivered {
                // Its records are with the consumers: delivering them again now would make
                // its completion count the second delivery instead of the first.
                Some(format!(
                    "in flight: delivery {} of its records is still being applied; backfill it once it is applied",
                    entry.generation
                ))
            } else {
                None
            };
            plan.files.push(BackfillFile {
                region: b.region.clone(),
                seq: b.seq,
                date: b.date,
                name: name.clone(),
                state: entry.state,
                excluded,
            });
            work.insert(name.clone(), (entry.clone(), listed.clone()));
        }
        plan.files.sort_by(|a, b| (&a.region, a.seq, &a.name).cmp(&(&b.region, b.seq, &b.name)));
        Ok((plan, work))
    }

    /// Processes the planned files, region by region; `progress` is called after each file.
    /// A region's consecutive files go into units of work where the delivery allows it
    /// (`engine::group`), each file counted as it would be alone.
    pub async fn backfill(
        &self,
        plan: &BackfillPlan,
        work: &HashMap<String, (LedgerEntry, Listed)>,
        cancel: &CancellationToken,
        mut progress: impl FnMut(&BackfillFile, &Tally),
    ) -> Result<BackfillReport, EngineError> {
        let mut report = BackfillReport::default();
        for files in plan.files.chunk_by(|a, b| a.region == b.region) {
            self.backfill_region(files, work, &mut report, cancel, &mut progress).await?;
        }
        Ok(report)
    }

    /// Backfills one region's `files` (in SEQ order).
    async fn backfill_region(
        &self,
        files: &[BackfillFile],
        work: &HashMap<String, (LedgerEntry, Listed)>,
        report: &mut BackfillReport,
        cancel: &CancellationToken,
        progress: &mut impl FnMut(&BackfillFile, &Tally),
    ) -> Result<(), EngineError> {
        let (mut objects, mut ledger, mut order) = (BTreeMap::new(), HashMap::new(), Vec::new());
        let mut by_name = HashMap::new();
        for f in files {
            if let Some(why) = &f.excluded {
                report.excluded.push((f.name.clone(), why.clone()));
                progress(f, &Tally::default());
                continue;
            }
            let Some((entry, listed)) = work.get(&f.name) else { continue };
            objects.insert(f.name.clone(), listed.clone());
            ledger.insert(f.name.clone(), entry.clone());
            order.push(Apply { name: f.name.clone(), seq: f.seq, late: false });
            by_name.insert(f.name.as_str(), f);
        }
        let Some(region) = files.first().map(|f| f.region.clone()) else { return Ok(()) };
        let mut order = FileList::new(region, order);
        let mut pacing = Pacing::default();
        while let Some(action) = order.next_action() {
            if cancel.is_cancelled() {
                return Err(EngineError::Cancelled);
            }
            let Some(f) = by_name.get(action.name.as_str()).copied() else { break };
            let (most, retrying) = pacing.next();
            if most > 0 {
                let mut part = PassReport::default();
                let grouped = self
                    .apply_group(&mut order, &action, (&objects, &mut ledger), (most, retrying), &mut part, cancel)
                    .await?;
                pacing.after(&grouped);
                for name in &part.applied {
                    let (Some(f), Some(entry)) = (by_name.get(name.as_str()), ledger.get(name)) else { continue };
                    report.add(f, entry.tally);
                    progress(f, &entry.tally);
                }
                if let Grouped::Deferred { error, .. } = grouped {
                    return Err(error);
                }
                if !matches!(grouped, Grouped::Alone) {
                    continue;
                }
            }
            let Some((entry, listed)) = work.get(&f.name) else { break };
            let span = tracing::info_span!("backfill", region = %f.region, file = %f.name, seq = f.seq);
            let tally = self.backfill_one(f, entry, listed, report, cancel).instrument(span).await?;
            order.applied(&action.name, action.seq);
            report.add(f, tally);
            progress(f, &tally);
        }
        Ok(())
    }

    /// Processes one file on its own; returns its counts.
    async fn backfill_one(
        &self,
        f: &BackfillFile,
        entry: &LedgerEntry,
        listed: &Listed,
        report: &mut BackfillReport,
        cancel: &CancellationToken,
    ) -> Result<Tally, EngineError> {
        Ok(match self.process_file(entry, listed, cancel).await? {
            FileOutcome::Delivered { delivery, entry: after } => {
                match self.commit_file(delivery, after, Vec::new()).await {
                    Ok(written) => written.tally,
                    Err(e) if e.is_superseded() => {
                        // Applied by `run` meanwhile: its records are there already.
                        report.excluded.push((f.name.clone(), format!("applied meanwhile by another writer: {e}")));
                        Tally::default()
                    }
                    Err(e) => return Err(e),
                }
            }
            FileOutcome::Quarantined { entry: after } => {
                let reason = after.reason.clone().unwrap_or_default();
                tracing::warn!(%reason, "quarantined");
                self.commit(Commit { ledger: vec![after], ..Default::default() }, cancel).await?;
                report.quarantined.push((f.name.clone(), reason));
                Tally::default()
            }
        })
    }
}

impl BackfillReport {
    /// Counts one processed file.
    fn add(&mut self, f: &BackfillFile, tally: Tally) {
        self.processed += 1;
        self.tally += tally;
        match self.by_region.iter_mut().find(|(r, _, _)| *r == f.region) {
            Some((_, n, t)) => {
                *n += 1;
                *t += tally;
            }
            None => self.by_region.push((f.region.clone(), 1, tally)),
        }
    }
}
