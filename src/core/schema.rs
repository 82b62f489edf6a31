//! Record layouts as data.
//!
//! A layout (TOML, see `schemas/esr-rmt.toml`) names the header and trailer tags, where
//! the record type, key and change indicator live, and for every record type its fields
//! with a format (`X(n)`, `N(n)`, `L(n)`, `F(n)`) and a required flag. Users adapt the
//! layout without touching code. Invariant: a record line becomes a [`Record`] only when
//! its type is known, its field count matches and every checked field fits its format;
//! otherwise it is a line fault with a reason naming the field.

use crate::core::record::{FieldNames, Fields, Record};
use crate::core::version::Version;
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// The layout embedded in the binary.
pub const DEFAULT_LAYOUT_TOML: &str = include_str!("../../schemas/esr-rmt.toml");

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("layout is not valid TOML: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("layout: {0}")]
    Invalid(String),
}

/// A field format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `X(n)`: text of at most n characters.
    Text(usize),
    /// `N(n)`: 1 to n digits.
    Digits(usize),
    /// `L(n)`: exactly n digits.
    FixedDigits(usize),
    /// `F(n)`: exactly n characters.
    Fixed(usize),
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Format::Text(n) => write!(f, "X({n})"),
            Format::Digits(n) => write!(f, "N({n})"),
            Format::FixedDigits(n) => write!(f, "L({n})"),
            Format::Fixed(n) => write!(f, "F({n})"),
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("field format {s:?} is not one of X(n), N(n), L(n), F(n)");
        let (letter, rest) = s.split_at_checked(1).ok_or_else(bad)?;
        let n: usize = rest
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|n| n.parse().ok())
            .filter(|n| *n > 0)
            .ok_or_else(bad)?;
        match letter {
            "X" => Ok(Format::Text(n)),
            "N" => Ok(Format::Digits(n)),
            "L" => Ok(Format::FixedDigits(n)),
            "F" => Ok(Format::Fixed(n)),
            _ => Err(bad()),
        }
    }
}

impl Format {
    /// Checks a non-empty value; the error says what was expected.
    pub fn check(&self, value: &str) -> Result<(), String> {
        let digits = |v: &str| v.bytes().all(|b| b.is_ascii_digit());
        let chars = || value.chars().count();
        match *self {
            Format::Text(n) if chars() > n => Err(format!("longer than {n} characters")),
            Format::Digits(_) if !digits(value) => Err("not all digits".into()),
            Format::Digits(n) if value.len() > n => Err(format!("more than {n} digits")),
            Format::FixedDigits(n) if !digits(value) || value.len() != n => Err(format!("not exactly {n} digits")),
            Format::Fixed(n) if chars() != n => Err(format!("not exactly {n} characters")),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LayoutFile {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default = "default_header_tag")]
    header_tag: String,
    #[serde(default = "default_trailer_tag")]
    trailer_tag: String,
    key_field: String,
    indicator_field: String,
    #[serde(default = "default_create")]
    create_indicator: String,
    #[serde(default = "default_delete")]
    delete_indicator: String,
    #[serde(rename = "record")]
    records: Vec<RecordFile>,
}

fn default_header_tag() -> String {
    "HDR".into()
}
fn default_trailer_tag() -> String {
    "TRL".into()
}
fn default_create() -> String {
    "C".into()
}
fn default_delete() -> String {
    "D".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordFile {
    #[serde(rename = "type")]
    record_type: String,
    #[serde(rename = "field")]
    fields: Vec<FieldFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldFile {
    name: String,
    format: String,
    #[serde(default)]
    required: bool,
}

/// One field of a record layout.
#[derive(Clone, Debug)]
pub struct Field {
    pub name: Arc<str>,
    pub format: Format,
    pub required: bool,
}

/// The layout of one record type. The record type is always field 1.
#[derive(Clone, Debug)]
pub struct RecordLayout {
    pub record_type: Arc<str>,
    pub fields: Vec<Field>,
    /// The fields a record carries as payload: all but type, key and indicator.
    pub payload_names: FieldNames,
    key_index: usize,
    indicator_index: usize,
}

/// A line fault: why one record line is rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineFault(pub String);

/// A validated layout.
#[derive(Clone, Debug)]
pub struct Layout {
    pub name: String,
    pub description: String,
    pub header_tag: String,
    pub trailer_tag: String,
    pub create_indicator: String,
    pub delete_indicator: String,
    records: HashMap<String, RecordLayout>,
}

/// A record line whose fields passed the layout, before it gets its version.
pub struct Checked<'a> {
    pub layout: &'a RecordLayout,
    pub deleted: bool,
}

impl Layout {
    pub fn default_esr() -> Self {
        // The embedded layout is a constant that the unit tests below load.
        Self::from_toml(DEFAULT_LAYOUT_TOML).expect("the embedded layout is valid")
    }

    pub fn from_toml(text: &str) -> Result<Self, LayoutError> {
        let file: LayoutFile = toml::from_str(text)?;
        let invalid = |m: String| LayoutError::Invalid(m);
        if file.records.is_empty() {
            return Err(invalid("at least one [[record]] is needed".into()));
        }
        let mut records = HashMap::new();
        for r in file.records {
            let mut fields = Vec::with_capacity(r.fields.len());
            for f in &r.fields {
                let format = f
                    .format
                    .parse()
                    .map_err(|e: String| invalid(format!("record {} field {}: {e}", r.record_type, f.name)))?;
                if fields.iter().any(|x: &Field| *x.name == *f.name) {
                    return Err(invalid(format!("record {}: field {} appears twice", r.record_type, f.name)));
                }
                fields.push(Field { name: f.name.as_str().into(), format, required: f.required });
            }
            let index_of = |name: &str| fields.iter().position(|f| &*f.name == name);
            let key_index = index_of(&file.key_field)
                .ok_or_else(|| invalid(format!("record {} has no key field {}", r.record_type, file.key_field)))?;
            let indicator_index = index_of(&file.indicator_field).ok_or_else(|| {
                invalid(format!("record {} has no indicator field {}", r.record_type, file.indicator_field))
            })?;
            if key_index == 0 || indicator_index == 0 {
                return Err(invalid(format!("record {}: field 1 is the record type", r.record_type)));
            }
            if r.record_type == file.header_tag || r.record_type == file.trailer_tag {
                return Err(invalid(format!("record type {} collides with the header or trailer tag", r.record_type)));
            }
            let payload_names: FieldNames = fields
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != 0 && *i != key_index && *i != indicator_index)
                .map(|(_, f)| f.name.clone())
                .collect();
            let layout = RecordLayout {
                record_type: r.record_type.as_str().into(),
                fields,
                payload_names,
                key_index,
                indicator_index,
            };
            if records.insert(r.record_type.clone(), layout).is_some() {
                return Err(invalid(format!("record type {} is defined twice", r.record_type)));
            }
        }
        Ok(Self {
            name: file.name,
            description: file.description,
            header_tag: file.header_tag,
            trailer_tag: file.trailer_tag,
            create_indicator: file.create_indicator,
            delete_indicator: file.delete_indicator,
            records,
        })
    }

    pub fn record_types(&self) -> impl Iterator<Item = &RecordLayout> {
        self.records.values()
    }

    pub fn record(&self, record_type: &str) -> Option<&RecordLayout> {
        self.records.get(record_type)
    }

    /// Checks one record line's fields (already split and UTF-8) against the layout.
    pub fn check<'a>(&'a self, fields: &[&str]) -> Result<Checked<'a>, LineFault> {
        let record_type = fields.first().copied().unwrap_or("");
        let layout =
            self.records.get(record_type).ok_or_else(|| LineFault(format!("unknown record type {record_type:?}")))?;
        if fields.len() != layout.fields.len() {
            return Err(LineFault(format!(
                "wrong field count: {} has {} fields, the line has {}",
                record_type,
                layout.fields.len(),
                fields.len()
            )));
        }
        let indicator = fields[layout.indicator_index];
        let deleted = if indicator == self.delete_indicator {
            true
        } else if indicator == self.create_indicator {
            false
        } else {
            return Err(LineFault(format!(
                "bad indicator {indicator:?} in field {} ({}): expected {} or {}",
                layout.indicator_index + 1,
                layout.fields[layout.indicator_index].name,
                self.create_indicator,
                self.delete_indicator
            )));
        };
        for (i, (field, value)) in layout.fields.iter().zip(fields).enumerate() {
            let structural = i == 0 || i == layout.key_index || i == layout.indicator_index;
            if deleted && !structural {
                continue;
            }
            if value.is_empty() {
                if field.required || structural {
                    return Err(LineFault(format!("field {} ({}) is required", i + 1, field.name)));
                }
                continue;
            }
            field.format.check(value).map_err(|why| {
                LineFault(format!("field {} ({}) {why}: {} expected", i + 1, field.name, field.format))
            })?;
        }
        Ok(Checked { layout, deleted })
    }
}

impl RecordLayout {
    /// Builds the record of a checked line. Fields other than type, key and indicator
    /// are kept in layout order; a tombstone keeps none.
    pub fn build(
        &self,
        fields: &[&str],
        deleted: bool,
        version: Version,
        region: &Arc<str>,
        file: &Arc<str>,
    ) -> Record {
        let payload = (!deleted).then(|| {
            let values = fields
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != 0 && *i != self.key_index && *i != self.indicator_index)
                .map(|(_, v)| *v);
            Fields::new(self.payload_names.clone(), values)
        });
        Record {
            record_type: self.record_type.clone(),
            key: fields[self.key_index].to_string(),
            deleted,
            version,
            region: region.clone(),
            file: file.clone(),
            fields: payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn por(overrides: &[(usize, &str)]) -> Vec<String> {
        let mut f: Vec<String> =
            ["POR", "123456", "", "C", "42", "Staff Nurse", "DPN1", "SEV", "Y", "RA7", "1234", "Org", "Loc"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        for (i, v) in overrides {
            f[*i] = v.to_string();
        }
        f
    }

    fn check(fields: &[String]) -> Result<bool, String> {
        let l = Layout::default_esr();
        let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
        l.check(&refs).map(|c| c.deleted).map_err(|e| e.0)
    }

    #[test]
    fn embedded_layout_matches_the_contract() {
        let l = Layout::default_esr();
        assert_eq!(l.record("POR").unwrap().fields.len(), 13);
        assert_eq!(l.record("POS").unwrap().fields.len(), 16);
    }

    #[test]
    fn formats_parse_and_check() {
        assert_eq!("X(30)".parse::<Format>(), Ok(Format::Text(30)));
        assert!("Y(3)".parse::<Format>().is_err());
        assert!("X(0)".parse::<Format>().is_err());
        assert!(Format::Digits(3).check("12").is_ok());
        assert!(Format::Digits(3).check("1234").is_err());
        assert!(Format::Digits(3).check("1a").is_err());
        assert!(Format::FixedDigits(4).check("123").is_err());
        assert!(Format::Fixed(1).check("é").is_ok());
        assert!(Format::Text(2).check("éé").is_ok());
    }

    #[test]
    fn line_faults_name_the_field() {
        assert_eq!(check(&por(&[])), Ok(false));
        assert!(check(&por(&[(1, "12a")])).unwrap_err().contains("field 2 (position_id)"));
        assert!(check(&por(&[(3, "X")])).unwrap_err().contains("bad indicator"));
        assert!(check(&por(&[(10, "123")])).unwrap_err().contains("vpd_code"));
        assert!(check(&por(&[(1, "")])).unwrap_err().contains("required"));
        let mut short = por(&[]);
        short.pop();
        assert!(check(&short).unwrap_err().contains("wrong field count"));
        assert!(check(&por(&[(0, "ABC")])).unwrap_err().contains("unknown record type"));
    }

    #[test]
    fn delete_checks_only_structural_fields() {
        let mut d = por(&[(3, "D"), (10, "bad")]);
        assert_eq!(check(&d), Ok(true));
        d[1] = "x".into();
        assert!(check(&d).is_err());
    }
}
