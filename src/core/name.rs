//! File-name profile: which object keys are batch files and what their names say.
//!
//! Invariant: every object key is classified exactly once — ignored (folders and
//! in-progress uploads whose name starts with `.`), a batch file with region, kind, date
//! and SEQ, or a bad name with a reason starting `bad name:`. Nothing is dropped silently.

use chrono::NaiveDate;
use regex::Regex;
use std::fmt;

/// The default ESR pattern: `DE_<REGION>_<KIND>_<YYYYMMDD>_<SEQ>.DAT`.
pub const DEFAULT_NAME_PATTERN: &str =
    r"^DE_(?P<region>[A-Z]{3})_(?P<kind>RMC|RMF)_(?P<date>\d{8})_(?P<seq>\d{8})\.DAT$";

const REQUIRED_GROUPS: [&str; 4] = ["region", "kind", "date", "seq"];

/// The largest SEQ accepted (what a signed 64-bit store column holds, with room to add 1).
pub const MAX_SEQ: u64 = i64::MAX as u64 - 1;

/// A batch file name and what it says.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileName {
    pub name: String,
    pub region: String,
    pub kind: String,
    pub date: NaiveDate,
    pub seq: u64,
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// The classification of one object key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameVerdict {
    /// A folder marker or an upload in progress: not a file yet.
    Ignored,
    Batch(FileName),
    /// Not a batch file name; the reason starts with `bad name:`.
    Bad {
        name: String,
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("name_pattern is not a valid regex: {0}")]
    Regex(#[from] regex::Error),
    #[error("name_pattern must have the named groups region, kind, date and seq; missing: {0}")]
    MissingGroups(String),
}

/// A compiled file-name profile.
#[derive(Clone, Debug)]
pub struct NameProfile {
    regex: Regex,
    is_default: bool,
}

impl Default for NameProfile {
    fn default() -> Self {
        // The default pattern is a constant checked by the unit tests below.
        Self::new(DEFAULT_NAME_PATTERN).expect("the default pattern compiles")
    }
}

/// The last path segment of an object key: the file's name.
pub fn object_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

impl NameProfile {
    pub fn new(pattern: &str) -> Result<Self, ProfileError> {
        let regex = Regex::new(pattern)?;
        let names: Vec<&str> = regex.capture_names().flatten().collect();
        let missing: Vec<&str> = REQUIRED_GROUPS.iter().copied().filter(|g| !names.contains(g)).collect();
        if !missing.is_empty() {
            return Err(ProfileError::MissingGroups(missing.join(", ")));
        }
        Ok(Self { regex, is_default: pattern == DEFAULT_NAME_PATTERN })
    }

    pub fn pattern(&self) -> &str {
        self.regex.as_str()
    }

    /// Whether [`NameProfile::classify`] ignores the key (a folder marker, or a name
    /// starting with `.`: an upload in progress), without parsing the name.
    pub fn is_ignored(&self, key: &str) -> bool {
        key.is_empty() || key.ends_with('/') || object_name(key).starts_with('.')
    }

    /// Classifies an object key (folders in front of the name are allowed).
    pub fn classify(&self, key: &str) -> NameVerdict {
        if self.is_ignored(key) {
            return NameVerdict::Ignored;
        }
        let name = object_name(key);
        match self.parse(name) {
            Ok(file) => NameVerdict::Batch(file),
            Err(why) => NameVerdict::Bad { name: name.to_string(), reason: format!("bad name: {why}") },
        }
    }

    fn parse(&self, name: &str) -> Result<FileName, String> {
        let Some(caps) = self.regex.captures(name) else {
            return Err(if self.is_default {
                "does not match DE_<REGION>_<RMC|RMF>_<YYYYMMDD>_<8-digit SEQ>.DAT".to_string()
            } else {
                format!("does not match the pattern {}", self.regex.as_str())
            });
        };
        // `new` checked that all four groups exist; a group that did not take part in the
        // match is reported as empty.
        let group = |g: &str| caps.name(g).map_or("", |m| m.as_str());
        let region = group("region");
        if region.is_empty() {
            return Err("the region is empty".into());
        }
        let kind = group("kind");
        if kind.is_empty() {
            return Err("the kind is empty".into());
        }
        let date_text = group("date");
        let date = parse_yyyymmdd(date_text).ok_or_else(|| format!("{date_text} is not a calendar date (YYYYMMDD)"))?;
        let seq_text = group("seq");
        let seq: u64 = if !seq_text.is_empty() && seq_text.bytes().all(|b| b.is_ascii_digit()) {
            seq_text.parse().map_err(|_| format!("SEQ {seq_text} is too large"))?
        } else {
            return Err(format!("SEQ {seq_text:?} is not a number"));
        };
        if seq == 0 {
            return Err("SEQ must be greater than 0".into());
        }
        if seq > MAX_SEQ {
            return Err(format!("SEQ {seq_text} is too large (at most {MAX_SEQ})"));
        }
        Ok(FileName { name: name.to_string(), region: region.to_string(), kind: kind.to_string(), date, seq })
    }
}

/// Parses `YYYYMMDD` as a real calendar date.
pub fn parse_yyyymmdd(text: &str) -> Option<NaiveDate> {
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    NaiveDate::parse_from_str(text, "%Y%m%d").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad_reason(key: &str) -> String {
        match NameProfile::default().classify(key) {
            NameVerdict::Bad { reason, .. } => reason,
            other => panic!("expected a bad name for {key}, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_default_profile() {
        let v = NameProfile::default().classify("incoming/2022/DE_SEV_RMC_20220730_00001157.DAT");
        let NameVerdict::Batch(f) = v else { panic!("{v:?}") };
        assert_eq!(f.name, "DE_SEV_RMC_20220730_00001157.DAT");
        assert_eq!((f.region.as_str(), f.kind.as_str(), f.seq), ("SEV", "RMC", 1157));
        assert_eq!(f.date, NaiveDate::from_ymd_opt(2022, 7, 30).unwrap());
    }

    #[test]
    fn ignores_folders_and_uploads_in_progress() {
        let p = NameProfile::default();
        assert_eq!(p.classify("incoming/"), NameVerdict::Ignored);
        assert_eq!(p.classify("a/.DE_SEV_RMC_20220730_00001157.DAT"), NameVerdict::Ignored);
    }

    #[test]
    fn bad_names_say_why() {
        assert!(bad_reason("DE_SEV_RMC_20220230_00001157.DAT").contains("not a calendar date"));
        assert!(bad_reason("DE_SEV_RMC_20220730_00000000.DAT").contains("greater than 0"));
        assert!(bad_reason("DE_SEV_RMC_20220730_1157.DAT").starts_with("bad name: does not match"));
        assert!(bad_reason("DE_sev_RMC_20220730_00001157.DAT").starts_with("bad name:"));
        assert!(bad_reason("DE_SEV_RMX_20220730_00001157.DAT").starts_with("bad name:"));
        assert!(bad_reason("notes.txt").starts_with("bad name:"));
    }

    #[test]
    fn custom_pattern_needs_all_groups() {
        assert!(matches!(NameProfile::new(r"^(?P<region>\w+)$"), Err(ProfileError::MissingGroups(_))));
        let p = NameProfile::new(r"^(?P<region>[A-Z]+)-(?P<kind>\w+)-(?P<date>\d{8})-(?P<seq>\d+)\.csv$").unwrap();
        let NameVerdict::Batch(f) = p.classify("LDN-FULL-20240101-7.csv") else { panic!() };
        assert_eq!((f.region.as_str(), f.seq), ("LDN", 7));
        assert!(matches!(p.classify("x.csv"), NameVerdict::Bad { .. }));
    }
}
