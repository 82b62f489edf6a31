//! Full files: a file kind whose files hold the complete set of a region's records.
//!
//! Invariant (the contract's full-file rule): whatever the arrival order, the records
//! equal applying every applied file in version order, where a full file first turns
//! every live record of its region (of the record types its layout applies) into a
//! tombstone at the full file's version with line 0, and then applies its lines.
//!
//! How that is kept with the version rule and one more rule. The store keeps, per region
//! and record type, a **floor**: the version `(date, SEQ, 0)` of the latest full file
//! applied there (it only rises). After every file is applied, no live record of a region
//! may be older than its floor; such records are turned into tombstones carrying the
//! floor's version and file (a **sweep**). For the full file itself the sweep removes
//! what it did not contain: its own lines are newer than the floor, and so is every
//! record a later file wrote. For a file older than the floor that arrives later, the
//! sweep removes what it brought back — in version order the full file came after it.
//! A tombstone is never touched (the full file turns only live records into tombstones),
//! and a sweep is idempotent: a redelivered file removes nothing twice.

use crate::core::name::FileName;
use crate::core::schema::Layout;
use crate::core::version::Version;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What applying a full file of a kind does to the records it does not contain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FullFileMode {
    /// They become tombstones (the ESR default: what operators do by hand today).
    #[default]
    Tombstone,
    /// They are counted and listed in the audit log, and left as they are.
    Report,
    /// The kind is treated like a change file.
    Off,
}

/// A full file being applied: its version (line 0) and the record types it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FullFile {
    pub mode: FullFileMode,
    /// The record types its layout applies; records of other types are left alone.
    pub record_types: Vec<String>,
}

/// Which file kinds are full files, and what they do (the profile's `full_files`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FullFileKinds(pub BTreeMap<String, FullFileMode>);

impl Default for FullFileKinds {
    /// The ESR profile: `RMF` files are full files whose missing records become tombstones.
    fn default() -> Self {
        Self(BTreeMap::from([("RMF".to_string(), FullFileMode::Tombstone)]))
    }
}

impl FullFileKinds {
    /// The sweep that follows applying `file` (delivery `generation`) under `layout`.
    pub fn sweep_for(&self, file: &FileName, generation: u32, layout: &Layout) -> Sweep {
        let full = match self.0.get(&file.kind) {
            None | Some(FullFileMode::Off) => None,
            Some(mode) => {
                let mut record_types: Vec<String> = layout.record_types().map(|r| r.record_type.to_string()).collect();
                record_types.sort();
                Some(FullFile { mode: *mode, record_types })
            }
        };
        Sweep {
            region: file.region.clone(),
            file: file.name.clone(),
            generation,
            version: Version { date: file.date, seq: file.seq, line: 0 },
            full,
        }
    }
}

/// What the store does for one applied file of a region, after its lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sweep {
    pub region: String,
    /// The file just applied.
    pub file: String,
    /// Its delivery (`LedgerEntry::generation`): removals are counted once per delivery.
    pub generation: u32,
    /// Its version with line 0: every line of it is newer.
    pub version: Version,
    /// Set when the file is a full file (`Off` kinds are not).
    pub full: Option<FullFile>,
}

impl Sweep {
    /// The floor this sweep raises, if any: a full file in `tombstone` mode.
    pub fn raises_floor(&self) -> Option<&FullFile> {
        self.full.as_ref().filter(|f| f.mode == FullFileMode::Tombstone)
    }

    /// The record types a `report` full file counts, if it is one.
    pub fn reports(&self) -> Option<&FullFile> {
        self.full.as_ref().filter(|f| f.mode == FullFileMode::Report)
    }
}

/// What a sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Live records turned into tombstones.
    pub removed: u64,
    /// Live records a `report` full file did not contain (left as they are).
    pub reported: u64,
}

/// The version a full file's tombstones carry: its date and SEQ with line 0.
pub fn floor_of(version: Version) -> Version {
    Version { line: 0, ..version }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    #[test]
    fn every_line_of_a_file_is_newer_than_its_floor() {
        let v = Version { date: NaiveDate::from_ymd_opt(2022, 7, 30).unwrap(), seq: 7, line: 1 };
        assert!(floor_of(v) < v);
        let earlier_file = Version { seq: 6, line: 999_999, ..v };
        assert!(earlier_file < floor_of(v));
    }

    #[test]
    fn modes_read_as_configured() {
        let m: std::collections::BTreeMap<String, FullFileMode> =
            toml::from_str("RMF = \"tombstone\"\nX = \"report\"\nY = \"off\"").unwrap();
        assert_eq!(m["RMF"], FullFileMode::Tombstone);
        assert_eq!(m["X"], FullFileMode::Report);
        assert_eq!(m["Y"], FullFileMode::Off);
    }
}
