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

fn walk(root: &Path, dir: &Path, out: &mut Vec<Listed>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        // Real sub-folders are walked; a symbolic link to a folder is not followed (it
        // could loop). Links to files are read through.
        if entry.file_type()?.is_dir() {
            walk(root, &path, out)?;
            continue;
        }
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // removed meanwhile
            Err(e) => return Err(e),
        };
        if meta.is_file() && !entry.file_name().to_string_lossy().starts_with('.') {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let key = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            let (fingerprint, modified) = fingerprint(&meta);
            out.push(Listed { key, size: meta.len(), modified, fingerprint });
        }
    }
    Ok(())
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
            walk(&root, &root, &mut out).map(|_| out)
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
        let file = tokio::fs::File::open(&path).await.map_err(|e| self.error(&object.key, e))?;
        let meta = file.metadata().await.map_err(|e| self.error(&object.key, e))?;
        if fingerprint(&meta).0 != object.fingerprint {
            return Err(SourceError::Changed { location: self.location(&object.key) });
        }
        Ok(Box::new(tokio::io::BufReader::with_capacity(256 * 1024, file)))
    }
}
