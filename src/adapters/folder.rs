//! A local folder as the object source. Keys are paths relative to the root with `/`
//! separators, and every sub-folder is walked, as every key under an S3 prefix is listed.
//! Files whose name starts with `.` (uploads in progress) are not listed. A name that is
//! not valid UTF-8 is listed lossily, so it is quarantined as a bad name rather than
//! dropped. The fingerprint is size + modification time in nanoseconds, so writing a file
//! again (a newer mtime) is a new upload.

use crate::core::ledger::Listed;
use crate::ports::source::{ObjectReader, ObjectSource, SourceError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::fs::Metadata;
use std::io;
use std::path::{Path, PathBuf};

pub struct FolderSource {
    root: PathBuf,
}

impl FolderSource {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn location(&self, key: &str) -> String {
        self.root.join(key).display().to_string()
    }

    fn error(&self, key: &str, e: io::Error) -> SourceError {
        let location = self.location(key);
        match e.kind() {
            io::ErrorKind::NotFound => SourceError::NotFound { location },
            io::ErrorKind::PermissionDenied => SourceError::Denied { location, detail: e.to_string() },
            _ => SourceError::Unavailable { location, detail: e.to_string() },
        }
    }
}

fn fingerprint(meta: &Metadata) -> (String, DateTime<Utc>) {
    let modified: DateTime<Utc> = meta.modified().map(DateTime::from).unwrap_or(DateTime::UNIX_EPOCH);
    let nanos = modified.timestamp_nanos_opt().unwrap_or(modified.timestamp());
    (format!("{}-{}", meta.len(), nanos), modified)
}

/// Lists every object under `dir`. A problem with one entry (a sub-folder that cannot be
/// read, a dangling link, a FIFO or socket) is listed as that object's problem, so it is
/// quarantined visibly while every other object goes on; only `root` itself failing is an
/// error of the whole listing.
/// `prefix` is the key of `dir` followed by `/` (empty for `root`).
fn walk(root: &Path, dir: &Path, prefix: &str, out: &mut Vec<Listed>) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if dir == root => return Err(e),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()), // removed meanwhile
        Err(e) => {
            let key = prefix.trim_end_matches('/').to_string();
            out.push(problem(key, format!("a folder that cannot be read: {e}")));
            return Ok(());
        }
    };
    for entry in entries {
        let Ok(entry) = entry else { continue }; // removed while being listed
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        let key = format!("{prefix}{file_name}");
        let path = entry.path();
        // Real sub-folders are walked (only a key's last segment is its name, so a folder
        // starting with `.` is walked too); a symbolic link to a folder is not followed
        // (it could loop). Links to files are read through.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(root, &path, &format!("{key}/"), out)?;
            continue;
        }
        if file_name.starts_with('.') {
            continue; // an upload in progress
        }
        // A link is followed by path; anything else is stat-ed relative to the open
        // folder (no walk of the whole path per file).
        let meta = match entry.file_type() {
            Ok(t) if !t.is_symlink() => entry.metadata(),
            _ => std::fs::metadata(&path),
        };
        match meta {
            Ok(meta) if meta.is_file() => {
                let (fingerprint, modified) = fingerprint(&meta);
                out.push(Listed { key, size: meta.len(), modified, fingerprint, problem: None });
            }
            Ok(meta) if meta.is_dir() => {} // a link to a folder: not followed
            Ok(_) => out.push(problem(key, "not a regular file (a FIFO, socket or device)".into())),
            // Not found through the link but still there itself: a dangling link (else it
            // was removed meanwhile).
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if std::fs::symlink_metadata(&path).is_ok() {
                    out.push(problem(key, "a symbolic link whose target does not exist".into()));
                }
            }
            Err(e) => out.push(problem(key, format!("cannot be read: {e}"))),
        }
    }
    Ok(())
}

/// A listed object that cannot be read; its fingerprint changes when the problem does.
fn problem(key: String, why: String) -> Listed {
    let fingerprint = format!("problem-{:016x}", {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        why.hash(&mut h);
        h.finish()
    });
    Listed { key, size: 0, modified: DateTime::UNIX_EPOCH, fingerprint, problem: Some(why) }
}

#[async_trait]
impl ObjectSource for FolderSource {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    async fn list(&self) -> Result<Vec<Listed>, SourceError> {
        let root = self.root.clone();
        let listing = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&root, &root, "", &mut out).map(|_| out)
        })
        .await
        .map_err(|e| SourceError::Unavailable { location: self.describe(), detail: e.to_string() })?;
        let mut listing = listing.map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                SourceError::Invalid { location: self.describe(), detail: "the folder does not exist".into() }
            }
            _ => self.error("", e),
        })?;
        listing.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(listing)
    }

    async fn ping(&self) -> Result<(), SourceError> {
        match tokio::fs::read_dir(&self.root).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(SourceError::Invalid { location: self.describe(), detail: "the folder does not exist".into() })
            }
            Err(e) => Err(self.error("", e)),
        }
    }

    async fn open(&self, object: &Listed) -> Result<ObjectReader, SourceError> {
        let path = self.root.join(&object.key);
        // Never open what is not a regular file: opening a FIFO would wait for a writer.
        let kind = tokio::fs::metadata(&path).await.map_err(|e| self.error(&object.key, e))?;
        if !kind.is_file() {
            return Err(SourceError::Invalid {
                location: self.location(&object.key),
                detail: "not a regular file".into(),
            });
        }
        let file = tokio::fs::File::open(&path).await.map_err(|e| self.error(&object.key, e))?;
        let meta = file.metadata().await.map_err(|e| self.error(&object.key, e))?;
        if fingerprint(&meta).0 != object.fingerprint {
            return Err(SourceError::Changed { location: self.location(&object.key) });
        }
        Ok(Box::new(tokio::io::BufReader::with_capacity(256 * 1024, file)))
    }
}
