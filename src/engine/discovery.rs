//! Discovery: reconcile a full listing with the ledger (see `core::ledger`).

use super::known::Known;
use super::retry::retry_transient;
use super::{Engine, EngineError, PassReport};
use crate::core::ledger::{
    FileState, LedgerEntry, Listed, Observation, UploadVerdict, judge_second_claim, judge_upload, observe, seq_owner,
};
use crate::core::name::{NameVerdict, object_name};
use crate::ports::source::{SettledNames, SourceError};
use crate::ports::store::{Commit, Snapshot};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// The source's objects by name and the store's ledger and streams, read at the start of
/// a pass and reconciled (new names recorded, new uploads judged).
pub(super) struct Loaded {
    pub objects: BTreeMap<String, Listed>,
    pub ledger: HashMap<String, LedgerEntry>,
    pub streams: Vec<crate::core::sequencer::StreamRecord>,
    /// Listed names whose settled ledger entry was not read (the object is unchanged).
    pub settled: HashSet<String>,
    /// Ledger changes found by discovery, not yet written, by region (`None`: bad names).
    pub discovered: BTreeMap<Option<String>, Commit>,
    /// How much of the source the listing saw.
    pub seen: Seen,
}

/// How much of the source a listing saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Seen {
    /// Every object, each checked against the known names read from the store, as a full
    /// pass does (a pass over more keys than [`KEYS_AT_MOST`] lists in full and reads
    /// them): the reconcile.
    Everything,
    /// Every name, but the objects of settled names left out unchecked.
    AllButSettled,
    /// Only some keys: nothing may be decided from a file's absence (a baseline, an
    /// automatic skip).
    SomeKeys,
}

/// What a pass looks at in the source (see [`crate::ports::source::ObjectSource`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every object, each checked ([`list`](crate::ports::source::ObjectSource::list)): the reconcile that nothing
    /// escapes, whatever else was missed or lost.
    Full,
    /// Every object but those of settled names
    /// ([`list_quick`](crate::ports::source::ObjectSource::list_quick)). A new name is
    /// found at once; a settled file uploaded again in place, at the next full pass.
    Quick,
    /// Only these keys (named by event notifications) and those of the files a pass may
    /// work on ([`LedgerEntry::awaits_a_pass`]), each looked up ([`list_keys`](crate::ports::source::ObjectSource::list_keys));
    /// past [`KEYS_AT_MOST`] of them, a full listing instead.
    Keys(Vec<String>),
}

/// The most keys a pass over notified keys looks up one by one; past it, it lists in full.
pub const KEYS_AT_MOST: usize = 100;

impl Engine {
    /// Reads the store, lists the source as `scope` says and reconciles the two.
    pub(super) async fn load(
        &self,
        scope: &Scope,
        report: &mut PassReport,
        cancel: &CancellationToken,
    ) -> Result<Loaded, EngineError> {
        let (mut snapshot, known) = self.read_store(scope, cancel).await?;
        let mut ledger: HashMap<String, LedgerEntry> =
            std::mem::take(&mut snapshot.ledger).into_iter().map(|e| (e.name.clone(), e)).collect();
        let (listing, seen) = self.list_source(scope, &ledger, &known, cancel).await?;
        // A listing of everything is judged against every known name as the store has them
        // (a pass over too many keys listed everything with the names remembered): it is
        // the reconcile.
        let known =
            if seen == Seen::Everything && known.remembered { self.read_known_names(cancel).await? } else { known };
        let objects = self.by_name(listing);
        let settled = self.read_ledger(&objects, &mut ledger, &known, cancel).await?;
        let mut objects = objects;
        if let Some(ownership) = &self.ownership {
            // Claim every region seen, then look only at the regions held.
            let mut regions: Vec<Option<String>> = objects.values().map(|l| self.region_of_key(&l.key)).collect();
            regions.extend(ledger.values().map(|e| e.region().map(str::to_string)));
            regions.extend(snapshot.streams.iter().map(|s| Some(s.region.clone())));
            regions.sort();
            regions.dedup();
            let now = self.clock.now();
            retry_transient("claiming region leases", cancel, || async {
                Ok(ownership.claim(regions.iter().map(Option::as_deref), now).await?)
            })
            .await?;
            // Keys announced here for regions another instance drives: handed to it.
            if let Scope::Keys(announced) = scope
                && let Err(e) = self.hand_off_unowned(announced).await
            {
                tracing::warn!(error = %e, "announced keys of regions driven elsewhere not handed off; that instance's next full listing finds them");
            }
            objects.retain(|_, l| ownership.owns(self.region_of_key(&l.key).as_deref()));
        }
        let discovered = self.discover(&objects, &mut ledger, &settled, report, cancel).await?;
        Ok(Loaded { objects, ledger, streams: snapshot.streams, settled, discovered, seen })
    }

    /// The region of a key's file name (`None`: not a batch file name).
    pub(super) fn region_of_key(&self, key: &str) -> Option<String> {
        match self.profile.classify(key) {
            NameVerdict::Batch(b) => Some(b.region),
            _ => None,
        }
    }

    /// The active state (ledger entries and streams) and every known name's fingerprint:
    /// read from the store by a full pass (and whenever nothing is remembered), else what
    /// the engine remembers (`super::known`).
    async fn read_store(&self, scope: &Scope, cancel: &CancellationToken) -> Result<(Snapshot, Known), EngineError> {
        let recalled = if *scope == Scope::Full { None } else { self.known.recall() };
        let snapshot =
            retry_transient("reading the store", cancel, || async { Ok(self.store.active().await?) }).await?;
        let known = match recalled {
            Some(known) => known,
            None => self.read_known_names(cancel).await?,
        };
        Ok((snapshot, known))
    }

    /// Every known name from the store, remembered from now on.
    async fn read_known_names(&self, cancel: &CancellationToken) -> Result<Known, EngineError> {
        self.known.start_full_read();
        let names =
            retry_transient("reading the store", cancel, || async { Ok(self.store.known_names().await?) }).await?;
        let known = Known::read(names.into_iter().map(|k| (k.name, k.fingerprint)).collect());
        self.known.keep_full_read(&known);
        Ok(known)
    }

    /// The source's objects as `scope` lists them, and how much the listing saw; `active`
    /// is the active ledger.
    async fn list_source(
        &self,
        scope: &Scope,
        active: &HashMap<String, LedgerEntry>,
        known: &Known,
        cancel: &CancellationToken,
    ) -> Result<(Vec<Listed>, Seen), EngineError> {
        let full = || async {
            retry_transient("listing the source", cancel, || async { Ok(self.source.list().await?) }).await
        };
        match scope {
            Scope::Full => Ok((full().await?, Seen::Everything)),
            Scope::Quick => {
                let active: HashSet<String> = active.keys().cloned().collect();
                let known = known.clone();
                let settled: SettledNames = Arc::new(move |name: &str| known.contains(name) && !active.contains(name));
                let listing = retry_transient("listing the source", cancel, || async {
                    Ok(self.source.list_quick(settled.clone()).await?)
                })
                .await?;
                Ok((listing, Seen::AllButSettled))
            }
            Scope::Keys(keys) => {
                // The files a pass may work on are looked up too: each must be listed as
                // it is now (replaced, gone) to be read. The other active entries wait for
                // an upload of their own (see `LedgerEntry::awaits_a_pass`).
                let workable = active.values().filter(|e| e.awaits_a_pass()).map(|e| e.key.clone());
                let wanted: BTreeSet<String> = keys.iter().cloned().chain(workable).collect();
                if wanted.len() > KEYS_AT_MOST {
                    return Ok((full().await?, Seen::Everything));
                }
                let wanted: Vec<String> = wanted.into_iter().collect();
                let listing = retry_transient("listing the source", cancel, || async {
                    Ok(self.source.list_keys(&wanted).await?)
                })
                .await?;
                Ok((listing, Seen::SomeKeys))
            }
        }
    }

    /// Completes `ledger` (the active entries) with the entries this pass works on: for
    /// listed objects, those whose upload differs from what the ledger knows and those at
    /// the SEQ of a new name (a second claimant is judged against the first). Returns the
    /// listed names whose settled entry was not read (see [`LedgerEntry::is_settled`]): an
    /// object listed unchanged is never read, so what a pass costs follows the active
    /// state, not the history.
    async fn read_ledger(
        &self,
        objects: &BTreeMap<String, Listed>,
        ledger: &mut HashMap<String, LedgerEntry>,
        known: &Known,
        cancel: &CancellationToken,
    ) -> Result<HashSet<String>, EngineError> {
        let (mut names, mut positions, mut settled) = (Vec::new(), Vec::new(), HashSet::new());
        for (name, listed) in objects {
            if !ledger.contains_key(name) {
                match known.get(name) {
                    Some(fingerprint) if *fingerprint == listed.fingerprint => {
                        settled.insert(name.clone());
                        continue;
                    }
                    Some(_) => names.push(name.clone()), // uploaded again: read its entry
                    // Not in what was remembered: possibly written by another process since.
                    None if known.remembered => names.push(name.clone()),
                    None => {} // new
                }
            }
            // Whatever discovery may judge (new, uploaded again, a bad name judged again)
            // is judged against every name claiming its SEQ.
            if let NameVerdict::Batch(b) = self.profile.classify(&listed.key) {
                positions.push((b.region, b.seq));
            }
        }
        if !names.is_empty() || !positions.is_empty() {
            let found = retry_transient("reading the store", cancel, || async {
                Ok(self.store.ledger_lookup(names.clone(), positions.clone()).await?)
            })
            .await?;
            self.known.confirmed(found.iter().map(|e| (&e.name, &e.fingerprint)));
            for e in found {
                ledger.entry(e.name.clone()).or_insert(e);
            }
        }
        Ok(settled)
    }

    /// Writes each region's discoveries, fenced by its lease. A region whose lease was
    /// lost meanwhile is left to its new owner.
    pub(super) async fn commit_discovered(
        &self,
        discovered: BTreeMap<Option<String>, Commit>,
        cancel: &CancellationToken,
    ) -> Result<(), EngineError> {
        for (region, mut commit) in discovered {
            commit.fence = self.fence(region.as_deref());
            match self.commit(commit, cancel).await {
                Err(e) if e.is_fenced() => {} // left to the new owner by `commit`
                other => other?,
            }
        }
        Ok(())
    }

    /// The newest listed object for every name that is not ignored.
    pub(super) fn by_name(&self, listing: Vec<Listed>) -> BTreeMap<String, Listed> {
        let mut out: BTreeMap<String, Listed> = BTreeMap::new();
        for listed in listing {
            if self.profile.is_ignored(&listed.key) {
                continue;
            }
            let name = object_name(&listed.key).to_string();
            let newer = |old: &Listed| (listed.modified, &listed.key) > (old.modified, &old.key);
            if out.get(&name).is_none_or(newer) {
                out.insert(name, listed);
            }
        }
        out
    }

    /// Records new names and judges new uploads; updates `ledger` and returns the changes.
    async fn discover(
        &self,
        objects: &BTreeMap<String, Listed>,
        ledger: &mut HashMap<String, LedgerEntry>,
        settled: &HashSet<String>,
        report: &mut PassReport,
        cancel: &CancellationToken,
    ) -> Result<BTreeMap<Option<String>, Commit>, EngineError> {
        let now = self.clock.now();
        let mut commits: BTreeMap<Option<String>, Commit> = BTreeMap::new();
        let mut claims = Claims::index(ledger.values());
        for (name, listed) in objects {
            if cancel.is_cancelled() {
                return Err(EngineError::Cancelled);
            }
            if settled.contains(name) {
                continue; // listed as the ledger knows it: unchanged
            }
            let changed = match observe(listed, ledger.get(name), &self.profile, now) {
                Observation::Unchanged => match ledger.get(name) {
                    // A file skipped before it was ever read: record what was skipped, so a
                    // re-delivery of the same bytes is known as a duplicate.
                    Some(e) if e.state == FileState::Skipped && e.sha256.is_none() => {
                        match self.content_sha256(listed).await {
                            Ok(sha) => LedgerEntry { sha256: Some(sha), updated_at: now, ..e.clone() },
                            Err(e) => {
                                tracing::warn!(file = %name, error = %e, "cannot read a skipped file to record its content");
                                continue;
                            }
                        }
                    }
                    _ => continue,
                },
                Observation::New(entry) => {
                    report.discovered += 1;
                    match &entry.reason {
                        Some(reason) => tracing::warn!(file = %entry.name, key = %entry.key, %reason, "quarantined"),
                        None => {
                            tracing::info!(file = %entry.name, region = entry.region(), seq = entry.seq(), "discovered")
                        }
                    }
                    entry
                }
                Observation::Replaced(entry) => {
                    tracing::info!(file = %entry.name, "uploaded again before it was processed; using the newer upload");
                    entry
                }
                Observation::NeedsContent if listed.problem.is_some() => {
                    // Replaced by something that cannot be read: left as it is, visibly.
                    let problem = listed.problem.as_deref().unwrap_or_default();
                    tracing::warn!(file = %name, %problem, "a processed name was replaced by an object that cannot be read");
                    report.deferred.push((name.clone(), format!("unreadable object: {problem}")));
                    continue;
                }
                Observation::NeedsContent => {
                    let Some(entry) = ledger.get(name) else { continue };
                    let sha = match self.content_sha256(listed).await {
                        Ok(sha) => sha,
                        // One unreadable object affects that object alone: every other
                        // name and region goes on.
                        Err(e) => {
                            tracing::warn!(file = %name, error = %e, "cannot read a new upload; trying again next pass");
                            report.deferred.push((name.clone(), e.to_string()));
                            continue;
                        }
                    };
                    let verdict = judge_upload(entry, listed, &sha, now);
                    match &verdict {
                        UploadVerdict::Duplicate(e) => {
                            report.duplicates += 1;
                            commits.entry(e.region().map(str::to_string)).or_default().counters.duplicate_files += 1;
                            tracing::info!(file = %e.name, region = e.region(), seq = e.seq(), "duplicate upload ignored");
                        }
                        UploadVerdict::Conflict(e) => {
                            report.conflicts += 1;
                            let reason = e.conflict.as_ref().map(|c| c.reason.as_str()).unwrap_or("");
                            tracing::warn!(file = %e.name, region = e.region(), seq = e.seq(), %reason, "quarantined");
                        }
                        UploadVerdict::Revalidate(e) => {
                            tracing::info!(file = %e.name, region = e.region(), seq = e.seq(), "new content; validating afresh");
                        }
                    }
                    verdict.entry().clone()
                }
            };
            let changed = match self.second_claim(changed, &claims, ledger, objects, report, cancel).await? {
                Some((entry, duplicate)) => {
                    if duplicate {
                        report.duplicates += 1;
                        commits.entry(entry.region().map(str::to_string)).or_default().counters.duplicate_files += 1;
                    } else if entry.state == FileState::Quarantined
                        && entry.reason.as_deref().is_some_and(|r| r.starts_with("conflict:"))
                    {
                        report.conflicts += 1;
                    }
                    entry
                }
                None => continue,
            };
            claims.add(&changed);
            ledger.insert(name.clone(), changed.clone());
            commits.entry(changed.region().map(str::to_string)).or_default().ledger.push(changed);
        }
        Ok(commits)
    }

    /// A file about to wait for its turn whose SEQ another name claimed first is judged
    /// against that owner (see [`seq_owner`]). Returns the entry to record and whether it
    /// is a duplicate of the owner; `None` when its content cannot be read now (deferred).
    async fn second_claim(
        &self,
        entry: LedgerEntry,
        claims: &Claims,
        ledger: &HashMap<String, LedgerEntry>,
        objects: &BTreeMap<String, Listed>,
        report: &mut PassReport,
        cancel: &CancellationToken,
    ) -> Result<Option<(LedgerEntry, bool)>, EngineError> {
        let (Some(region), Some(seq)) = (entry.region(), entry.seq()) else { return Ok(Some((entry, false))) };
        if entry.state != FileState::Pending {
            return Ok(Some((entry, false)));
        }
        // Every claimant counts, even one deleted before it was read: letting it lapse would
        // let both names be pending at the SEQ once it is uploaded again.
        let others = claims.of(region, seq).filter(|n| *n != &entry.name).filter_map(|n| ledger.get(n));
        let Some(owner) = seq_owner(others.chain(std::iter::once(&entry))).filter(|o| o.name != entry.name) else {
            return Ok(Some((entry, false)));
        };
        let Some(listed) = objects.get(&entry.name) else { return Ok(Some((entry, false))) };
        if let Some(problem) = &listed.problem {
            let mut e = entry.clone();
            e.state = FileState::Quarantined;
            e.reason = Some(format!("unreadable object: {problem}"));
            e.updated_at = self.clock.now();
            return Ok(Some((e, false)));
        }
        let sha = match self.content_sha256(listed).await {
            Ok(sha) => sha,
            Err(e) if cancel.is_cancelled() => return Err(e.into()),
            Err(e) => {
                tracing::warn!(file = %entry.name, error = %e, "cannot read a second claimant of a SEQ; trying again next pass");
                report.deferred.push((entry.name.clone(), e.to_string()));
                return Ok(None);
            }
        };
        let owner_sha = match (&owner.sha256, objects.get(&owner.name)) {
            (Some(sha), _) => Some(sha.clone()),
            (None, Some(owner_listed)) => self.content_sha256(owner_listed).await.ok(),
            (None, None) => None,
        };
        let (judged, duplicate) = judge_second_claim(&entry, owner, &sha, owner_sha.as_deref(), self.clock.now());
        let reason = judged.reason.as_deref().unwrap_or_default();
        if duplicate {
            tracing::info!(file = %judged.name, region, seq, %reason, "duplicate of the SEQ's first claimant ignored");
        } else {
            tracing::warn!(file = %judged.name, region, seq, %reason, "quarantined");
        }
        Ok(Some((judged, duplicate)))
    }

    pub(super) async fn content_sha256(&self, listed: &Listed) -> Result<String, SourceError> {
        if let Some(problem) = &listed.problem {
            return Err(SourceError::Invalid { location: listed.key.clone(), detail: problem.clone() });
        }
        let mut reader = self.source.open(listed).await?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|e| SourceError::Unavailable { location: listed.key.clone(), detail: e.to_string() })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hex::encode(hasher.finalize()))
    }
}

/// The names claiming each (region, SEQ), for finding a SEQ's second claimant.
struct Claims(HashMap<(String, u64), Vec<String>>);

impl Claims {
    fn index<'a>(ledger: impl IntoIterator<Item = &'a LedgerEntry>) -> Self {
        let mut claims = Claims(HashMap::new());
        for entry in ledger {
            claims.add(entry);
        }
        claims
    }

    fn add(&mut self, entry: &LedgerEntry) {
        if let (Some(region), Some(seq)) = (entry.region(), entry.seq()) {
            let names = self.0.entry((region.to_string(), seq)).or_default();
            if !names.contains(&entry.name) {
                names.push(entry.name.clone());
            }
        }
    }

    fn of(&self, region: &str, seq: u64) -> impl Iterator<Item = &String> {
        self.0.get(&(region.to_string(), seq)).into_iter().flatten()
    }
}
