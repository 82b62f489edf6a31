//! A local folder as the object source. Keys are paths relative to the root with `/`
//! separators, and every sub-folder is walked, as every key under an S3 prefix is listed.
//! Files whose name starts with `.` (uploads in progress) are not listed. A name that is
//! not valid UTF-8 is listed lossily, so it is quarantined as a bad name rather than
//! dropped. The fingerprint is size + modification time in nanoseconds, so writing a file
//! again (a newer mtime) is a new upload.
//!
//! A quick listing reads every folder but leaves out, without a `stat`, the files of
//! settled names (most of a long history): a pass then costs what its new and active
//! files cost.

use crate::core::ledger::Listed;
use crate::core::name::object_name;
use crate::ports::source::{ObjectReader, ObjectSource, SettledNames, SourceError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
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

    /// Walks the whole folder; a quick listing leaves out the `settled` names.
    async fn listing(&self, settled: Option<SettledNames>) -> Result<Vec<Listed>, SourceError> {
        let root = self.root.clone();
        let listing = tokio::task::spawn_blocking(move || {
            let mut w = Walk { root: &root, settled, out: Vec::new(), prefixes: Vec::new(), unchecked: Vec::new() };
            walk(&mut w, &root, "")?;
            Ok::<_, io::Error>(list_shared_names(w))
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
/// `prefix` is the key of `dir` followed by `/` (empty for `root`). A regular file whose
/// name is settled is not stat-ed: its key goes into `unchecked` instead.
fn walk(walk: &mut Walk<'_>, dir: &Path, prefix: &str) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if dir == walk.root => return Err(e),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()), // removed meanwhile
        Err(e) => {
            let key = prefix.trim_end_matches('/').to_string();
            walk.out.push(problem(key, format!("a folder that cannot be read: {e}")));
            return Ok(());
        }
    };
    let dir_index = walk.prefixes.len();
    walk.prefixes.push(prefix.to_string());
    for entry in entries {
        let Ok(entry) = entry else { continue }; // removed while being listed
        let name = entry.file_name().into_string().unwrap_or_else(|name| name.to_string_lossy().into_owned());
        let file_type = entry.file_type().ok();
        // Real sub-folders are walked (only a key's last segment is its name, so a folder
        // starting with `.` is walked too); a symbolic link to a folder is not followed
        // (it could loop). Links to files are read through.
        if file_type.is_some_and(|t| t.is_dir()) {
            self::walk(walk, &entry.path(), &format!("{prefix}{name}/"))?;
            continue;
        }
        if name.starts_with('.') {
            continue; // an upload in progress
        }
        if file_type.is_some_and(|t| t.is_file()) && walk.settled.as_ref().is_some_and(|settled| settled(&name)) {
            walk.unchecked.push((dir_index, name));
            continue;
        }
        // A link is followed by path; anything else is stat-ed relative to the open
        // folder (no walk of the whole path per file).
        let meta = match file_type {
            Some(t) if !t.is_symlink() => entry.metadata(),
            _ => std::fs::metadata(entry.path()),
        };
        let key = format!("{prefix}{name}");
        if let Some(listed) = checked(key, meta, || std::fs::symlink_metadata(entry.path()).is_ok()) {
            walk.out.push(listed);
        }
    }
    Ok(())
}

/// What one listing collects as it walks the folders.
struct Walk<'a> {
    root: &'a Path,
    /// A quick listing's settled names.
    settled: Option<SettledNames>,
    out: Vec<Listed>,
    /// The key prefix of every folder walked.
    prefixes: Vec<String>,
    /// The files of settled names, not stat-ed: their folder (in `prefixes`) and name.
    unchecked: Vec<(usize, String)>,
}

/// The listing of one object from its metadata (`meta`, through any link); `exists`
/// tells a dangling link from an object removed meanwhile. `None`: nothing to list.
fn checked(key: String, meta: io::Result<Metadata>, exists: impl FnOnce() -> bool) -> Option<Listed> {
    match meta {
        Ok(meta) if meta.is_file() => {
            let (fingerprint, modified) = fingerprint(&meta);
            Some(Listed { key, size: meta.len(), modified, fingerprint, problem: None })
        }
        Ok(meta) if meta.is_dir() => None, // a link to a folder: not followed
        Ok(_) => Some(problem(key, "not a regular file (a FIFO, socket or device)".into())),
        // Not found through the link but still there itself: a dangling link (else it
        // was removed meanwhile).
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            exists().then(|| problem(key, "a symbolic link whose target does not exist".into()))
        }
        Err(e) => Some(problem(key, format!("cannot be read: {e}"))),
    }
}

/// The files left unchecked whose name another key shares are stat-ed and listed after
/// all: which of the keys is the name's newest upload is decided by their times. (In one
/// folder, names are unique.)
fn list_shared_names(walk: Walk<'_>) -> Vec<Listed> {
    let Walk { root, mut out, prefixes, unchecked, .. } = walk;
    if unchecked.is_empty() || prefixes.len() < 2 {
        return out;
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    for name in out.iter().map(|l| object_name(&l.key)).chain(unchecked.iter().map(|(_, name)| name.as_str())) {
        *names.entry(name).or_default() += 1;
    }
    let shared: Vec<String> = unchecked
        .iter()
        .filter(|(_, name)| names.get(name.as_str()).is_some_and(|&n| n > 1))
        .map(|(dir, name)| format!("{}{name}", prefixes[*dir]))
        .collect();
    out.extend(shared.into_iter().filter_map(|key| checked_at(root, key)));
    out
}

/// The listing of the object at `key` under `root`, through any link (see [`checked`]).
fn checked_at(root: &Path, key: String) -> Option<Listed> {
    let path = root.join(&key);
    checked(key, std::fs::metadata(&path), || std::fs::symlink_metadata(&path).is_ok())
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
        self.listing(None).await
    }

    async fn list_quick(&self, settled: SettledNames) -> Result<Vec<Listed>, SourceError> {
        self.listing(Some(settled)).await
    }

    async fn list_keys(&self, keys: &[String]) -> Result<Vec<Listed>, SourceError> {
        let root = self.root.clone();
        let keys = keys.to_vec();
        let listed = tokio::task::spawn_blocking(move || {
            let mut out: Vec<Listed> = keys
                .into_iter()
                .filter(|key| !object_name(key).starts_with('.'))
                .filter_map(|key| checked_at(&root, key))
                .collect();
            out.sort_by(|a, b| a.key.cmp(&b.key));
            out.dedup_by(|a, b| a.key == b.key);
            out
        })
        .await
        .map_err(|e| SourceError::Unavailable { location: self.describe(), detail: e.to_string() })?;
        Ok(listed)
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
