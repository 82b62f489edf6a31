//! `audit`: the source listing, the ledger and the store compared, for what no single
//! component notices by itself — objects never picked up, files stuck in one state,
//! counts that do not add up, dead letters waiting.
//!
//! Invariant: the comparison is pure (it reads what it is given) and every finding names
//! the file (or queue) and the operator's fix. An empty result means every object under
//! the prefix is in the ledger, nothing waits longer than the threshold, and every
//! applied file's lines are accounted for exactly once.

use super::completion::InFlightFile;
use crate::core::ledger::{FileState, LedgerEntry, Listed};
use crate::core::name::{NameProfile, NameVerdict};
use chrono::{DateTime, NaiveDate, SecondsFormat, TimeDelta, Utc};
use serde::Serialize;
use std::collections::HashMap;

/// What kind of discrepancy a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// An object under the prefix that no pass has recorded.
    NeverSeen,
    /// A ledger entry still waiting whose object is gone from the source.
    ObjectMissing,
    /// Held (pending) longer than the threshold.
    StuckPending,
    /// Delivered to the broker longer than the threshold without all records applied.
    StuckInFlight,
    /// Quarantined longer than the threshold.
    StuckQuarantined,
    /// Applied, but its record lines and its applied/stale/unchanged/rejected/dead-lettered
    /// counts do not add up.
    CountsMismatch,
    /// Messages wait in the dead-letter queue.
    DeadLetters,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// The file (or queue) it is about.
    pub file: String,
    pub region: Option<String>,
    pub seq: Option<u64>,
    pub detail: String,
    /// What the operator does about it.
    pub fix: String,
}

/// What to audit and how strictly.
#[derive(Clone, Debug)]
pub struct AuditScope {
    /// Only files whose name date is in `[from, to]` (bad names are always included).
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    /// How long a file may stay held, in flight or quarantined.
    pub stuck_after: TimeDelta,
    /// Objects newer than this are not "never seen" yet: the next pass will get them.
    pub grace: TimeDelta,
}

/// Everything the comparison reads.
pub struct AuditInput<'a> {
    pub listing: &'a [Listed],
    pub ledger: &'a [LedgerEntry],
    pub in_flight: &'a [InFlightFile],
    /// The dead-letter queue's depth and name, with a broker.
    pub dead_letters: Option<(u64, String)>,
    pub profile: &'a NameProfile,
    pub now: DateTime<Utc>,
}

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl AuditScope {
    fn covers(&self, date: Option<NaiveDate>) -> bool {
        match date {
            None => true,
            Some(d) => self.from.is_none_or(|f| d >= f) && self.to.is_none_or(|t| d <= t),
        }
    }
}

pub fn audit(input: &AuditInput, scope: &AuditScope) -> Vec<Finding> {
    let mut findings = Vec::new();
    let by_key: HashMap<&str, &LedgerEntry> = input.ledger.iter().map(|e| (e.key.as_str(), e)).collect();
    let listed: HashMap<&str, &Listed> = input.listing.iter().map(|l| (l.key.as_str(), l)).collect();

    for object in input.listing {
        if by_key.contains_key(object.key.as_str()) || input.now - object.modified < scope.grace {
            continue;
        }
        let (date, region, seq) = match input.profile.classify(&object.key) {
            NameVerdict::Ignored => continue,
            NameVerdict::Batch(b) => (Some(b.date), Some(b.region), Some(b.seq)),
            NameVerdict::Bad { .. } => (None, None, None),
        };
        if !scope.covers(date) {
            continue;
        }
        findings.push(Finding {
            kind: FindingKind::NeverSeen,
            file: object.key.clone(),
            region,
            seq,
            detail: format!("uploaded {} and never recorded by a pass", at(object.modified)),
            fix: "check that `esr-ingest run` is running and passing (/healthz, `status`); \
                  `esr-ingest run --once` picks it up"
                .into(),
        });
    }

    let in_flight: HashMap<&str, &InFlightFile> = input.in_flight.iter().map(|f| (f.file.as_str(), f)).collect();
    for e in input.ledger {
        if !scope.covers(e.batch.as_ref().map(|b| b.date)) {
            continue;
        }
        let finding = |kind, detail: String, fix: &str| Finding {
            kind,
            file: e.name.clone(),
            region: e.region().map(str::to_string),
            seq: e.seq(),
            detail,
            fix: fix.to_string(),
        };
        let waited = input.now - e.updated_at;
        let stuck = waited > scope.stuck_after;
        let hours = waited.num_minutes() as f64 / 60.0;
        match e.state {
            FileState::Pending if !listed.contains_key(e.key.as_str()) => findings.push(finding(
                FindingKind::ObjectMissing,
                "held in the ledger, but the object is no longer in the source".into(),
                "re-upload the file under the same name, or `esr-ingest sequence skip` its SEQ",
            )),
            FileState::Pending if stuck => findings.push(finding(
                FindingKind::StuckPending,
                format!("held for {hours:.1} h (since {}): an earlier SEQ has not been processed", at(e.updated_at)),
                "upload the missing earlier SEQ (see `esr-ingest status`), or `esr-ingest sequence skip` it",
            )),
            FileState::Delivered if stuck => {
                let progress = in_flight.get(e.name.as_str()).map(|f| {
                    format!(
                        "; {} of {} record lines accounted for",
                        f.applied + f.stale + f.unchanged + f.rejected + f.dead_lettered,
                        f.record_lines
                    )
                });
                findings.push(finding(
                    FindingKind::StuckInFlight,
                    format!(
                        "delivered to the broker {hours:.1} h ago, records not all applied{}",
                        progress.unwrap_or_default()
                    ),
                    "check the consumers are running; `esr-ingest dlq list`, then `esr-ingest dlq replay --file` it",
                ));
            }
            FileState::Quarantined if stuck => findings.push(finding(
                FindingKind::StuckQuarantined,
                format!("quarantined for {hours:.1} h: {}", e.reason.as_deref().unwrap_or("?")),
                "fix the file and upload it again under the same name, or `esr-ingest sequence skip` its SEQ",
            )),
            FileState::Applied if e.tally.total() != e.record_lines => findings.push(finding(
                FindingKind::CountsMismatch,
                format!(
                    "{} record lines parsed, but {} accounted for (applied {}, stale {}, unchanged {}, \
                     rejected {}, dead-lettered {})",
                    e.record_lines,
                    e.tally.total(),
                    e.tally.applied,
                    e.tally.stale,
                    e.tally.unchanged,
                    e.tally.rejected,
                    e.tally.dead_lettered
                ),
                "replay it: `esr-ingest backfill --from D --to D --region R` with its date and region",
            )),
            _ => {}
        }
    }
    for f in input.in_flight {
        let accounted = f.applied + f.stale + f.unchanged + f.rejected + f.dead_lettered;
        if accounted > f.record_lines {
            findings.push(Finding {
                kind: FindingKind::CountsMismatch,
                file: f.file.clone(),
                region: f.region.clone(),
                seq: f.seq,
                detail: format!("{accounted} record lines accounted for, but the file has {}", f.record_lines),
                fix: "replay it: `esr-ingest backfill --from D --to D --region R` with its date and region".into(),
            });
        }
    }
    if let Some((depth, queue)) = &input.dead_letters
        && *depth > 0
    {
        findings.push(Finding {
            kind: FindingKind::DeadLetters,
            file: queue.clone(),
            region: None,
            seq: None,
            detail: format!("{depth} message(s) in the dead-letter queue"),
            fix: "`esr-ingest dlq list` to see why; fix the cause, then `esr-ingest dlq replay` (or `dlq purge --yes`)"
                .into(),
        });
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ledger::observe;
    use crate::core::record::Tally;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2022-08-10T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn listed(key: &str, age_hours: i64) -> Listed {
        Listed {
            key: key.into(),
            size: 10,
            modified: now() - TimeDelta::hours(age_hours),
            fingerprint: key.into(),
            problem: None,
        }
    }

    fn entry(key: &str, state: FileState, age_hours: i64) -> LedgerEntry {
        let crate::core::ledger::Observation::New(mut e) =
            observe(&listed(key, age_hours), None, &NameProfile::default(), now() - TimeDelta::hours(age_hours))
        else {
            panic!("a new object")
        };
        e.state = state;
        e.updated_at = now() - TimeDelta::hours(age_hours);
        e
    }

    fn scope() -> AuditScope {
        AuditScope { from: None, to: None, stuck_after: TimeDelta::hours(24), grace: TimeDelta::minutes(15) }
    }

    fn kinds(f: &[Finding]) -> Vec<(FindingKind, &str)> {
        f.iter().map(|f| (f.kind, f.file.as_str())).collect()
    }

    const A: &str = "DE_SEV_RMC_20220801_00000001.DAT";
    const B: &str = "DE_SEV_RMC_20220802_00000002.DAT";
    const C: &str = "DE_SEV_RMC_20220803_00000003.DAT";

    #[test]
    fn each_kind_of_discrepancy_is_found_with_its_fix() {
        let mut applied = entry(A, FileState::Applied, 100);
        applied.record_lines = 10;
        applied.tally = Tally { applied: 9, ..Default::default() };
        let held = entry(B, FileState::Pending, 48);
        let quarantined = entry(C, FileState::Quarantined, 30);
        let gone = entry("DE_WES_RMC_20220801_00000001.DAT", FileState::Pending, 1);
        let delivered = entry("DE_NWE_RMC_20220801_00000001.DAT", FileState::Delivered, 26);
        let listing = [
            listed(A, 100),
            listed(B, 48),
            listed(C, 30),
            listed("DE_NWE_RMC_20220801_00000001.DAT", 26),
            listed("DE_SEV_RMC_20220804_00000004.DAT", 2),
        ];
        let ledger = [applied, held, quarantined, gone, delivered];
        let input = AuditInput {
            listing: &listing,
            ledger: &ledger,
            in_flight: &[],
            dead_letters: Some((3, "esr-ingest.records.dlq".into())),
            profile: &NameProfile::default(),
            now: now(),
        };
        let found = audit(&input, &scope());
        assert_eq!(
            kinds(&found),
            vec![
                (FindingKind::NeverSeen, "DE_SEV_RMC_20220804_00000004.DAT"),
                (FindingKind::CountsMismatch, A),
                (FindingKind::StuckPending, B),
                (FindingKind::StuckQuarantined, C),
                (FindingKind::ObjectMissing, "DE_WES_RMC_20220801_00000001.DAT"),
                (FindingKind::StuckInFlight, "DE_NWE_RMC_20220801_00000001.DAT"),
                (FindingKind::DeadLetters, "esr-ingest.records.dlq"),
            ]
        );
        assert!(found.iter().all(|f| !f.fix.is_empty() && !f.detail.is_empty()));

        let narrow = AuditScope {
            from: NaiveDate::from_ymd_opt(2022, 8, 2),
            to: NaiveDate::from_ymd_opt(2022, 8, 2),
            ..scope()
        };
        let input = AuditInput { dead_letters: None, ..input };
        assert_eq!(kinds(&audit(&input, &narrow)), vec![(FindingKind::StuckPending, B)]);
    }

    #[test]
    fn a_healthy_store_has_no_findings_and_fresh_uploads_get_grace() {
        let mut applied = entry(A, FileState::Applied, 100);
        applied.record_lines = 10;
        applied.tally = Tally { applied: 7, stale: 1, unchanged: 1, rejected: 1, ..Tally::default() };
        let listing = [listed(A, 100), listed(B, 0), listed(".partial-upload", 5)];
        let input = AuditInput {
            listing: &listing,
            ledger: &[applied],
            in_flight: &[],
            dead_letters: Some((0, "dlq".into())),
            profile: &NameProfile::default(),
            now: now(),
        };
        assert_eq!(audit(&input, &scope()), vec![]);
    }
}
