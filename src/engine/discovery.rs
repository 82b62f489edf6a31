//! Discovery: reconcile a full listing with the ledger (see `core::ledger`).

use super::{Engine, EngineError, PassReport};
use crate::core::ledger::{LedgerEntry, Listed, Observation, UploadVerdict, judge_upload, observe};
use crate::core::name::{NameVerdict, object_name};
use crate::ports::source::SourceError;
use crate::ports::store::Commit;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

impl Engine {
    /// The newest listed object for every name that is not ignored.
    pub(super) fn by_name(&self, listing: Vec<Listed>) -> BTreeMap<String, Listed> {
        let mut out: BTreeMap<String, Listed> = BTreeMap::new();
        for listed in listing {
            if self.profile.classify(&listed.key) == NameVerdict::Ignored {
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
    pub(super) async fn discover(
        &self,
        objects: &BTreeMap<String, Listed>,
        ledger: &mut HashMap<String, LedgerEntry>,
        report: &mut PassReport,
        cancel: &CancellationToken,
    ) -> Result<Commit, EngineError> {
        let now = self.clock.now();
        let mut commit = Commit::default();
        for (name, listed) in objects {
            if cancel.is_cancelled() {
                return Err(EngineError::Cancelled);
            }
            let changed = match observe(listed, ledger.get(name), &self.profile, now) {
                Observation::Unchanged => continue,
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
                Observation::NeedsContent => {
                    let Some(entry) = ledger.get(name) else { continue };
                    let sha = match self.content_sha256(listed).await {
                        Ok(sha) => sha,
                        Err(e) if e.is_transient() => {
                            tracing::warn!(file = %name, error = %e, "cannot read a new upload; trying again next pass");
                            report.deferred.push((name.clone(), e.to_string()));
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    };
                    let verdict = judge_upload(entry, listed, &sha, now);
                    match &verdict {
                        UploadVerdict::Duplicate(e) => {
                            report.duplicates += 1;
                            commit.counters.duplicate_files += 1;
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
            ledger.insert(name.clone(), changed.clone());
            commit.ledger.push(changed);
        }
        Ok(commit)
    }

    async fn content_sha256(&self, listed: &Listed) -> Result<String, SourceError> {
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
