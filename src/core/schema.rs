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
    /// `N(n)`: 1 to n digits; `N(n,m)`: at most n digits of which up to m after a
    /// decimal point (`12.5` fits `N(5,2)`).
    Digits(usize, usize),
    /// `L(n)`: exactly n digits; `L(n,m)`: exactly n digits, the last m after a decimal
    /// point (`012.50` fits `L(5,2)`).
    FixedDigits(usize, usize),
    /// `F(n)`: exactly n characters.
    Fixed(usize),
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Format::Text(n) => write!(f, "X({n})"),
            Format::Digits(n, 0) => write!(f, "N({n})"),
            Format::Digits(n, m) => write!(f, "N({n},{m})"),
            Format::FixedDigits(n, 0) => write!(f, "L({n})"),
            Format::FixedDigits(n, m) => write!(f, "L({n},{m})"),
            Format::Fixed(n) => write!(f, "F({n})"),
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("field format {s:?} is not one of X(n), N(n), N(n,m), L(n), L(n,m), F(n)");
        let (letter, rest) = s.split_at_checked(1).ok_or_else(bad)?;
        let inner = rest.strip_prefix('(').and_then(|r| r.strip_suffix(')')).ok_or_else(bad)?;
        let (n, m) = match inner.split_once(',') {
            Some((n, m)) => (n.trim(), Some(m.trim())),
            None => (inner, None),
        };
        let n: usize = n.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
        let m: usize = match m {
            None => 0,
            Some(m) => m.parse().ok().filter(|m| *m < n).ok_or_else(bad)?,
        };
        match (letter, m) {
            ("X", 0) => Ok(Format::Text(n)),
            ("N", m) => Ok(Format::Digits(n, m)),
            ("L", m) => Ok(Format::FixedDigits(n, m)),
            ("F", 0) => Ok(Format::Fixed(n)),
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
            // a value is never longer in characters than in bytes
            Format::Text(n) if value.len() > n && chars() > n => Err(format!("longer than {n} characters")),
            Format::Digits(n, m) => {
                let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
                if whole.is_empty()
                    || !digits(whole)
                    || !digits(fraction)
                    || (value.contains('.') && fraction.is_empty())
                {
                    return Err(if m == 0 { "not all digits".into() } else { "not a decimal number".into() });
                }
                if fraction.len() > m {
                    return Err(if m == 0 { "not all digits".into() } else { format!("more than {m} decimals") });
                }
                if whole.len() + fraction.len() > n {
                    return Err(format!("more than {n} digits"));
                }
                Ok(())
            }
            Format::FixedDigits(n, 0) if !digits(value) || value.len() != n => Err(format!("not exactly {n} digits")),
            Format::FixedDigits(n, m) if m > 0 => match value.split_once('.') {
                Some((whole, fraction))
                    if digits(whole) && digits(fraction) && whole.len() == n - m && fraction.len() == m =>
                {
                    Ok(())
                }
                _ => Err(format!("not exactly {} digits, a point and {m} digits", n - m)),
            },
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
    /// One character; `"\t"` for a tab. Default `","`.
    #[serde(default = "default_separator")]
    separator: String,
    /// RFC 4180 quotes (`"a, b"` is one field). Default on.
    #[serde(default = "default_true")]
    quoting: bool,
    /// The classic header's tag (`HDR,<KIND>,<REGION>,<YYYYMMDD>,<SEQ>`); `[header]` says more.
    header_tag: Option<String>,
    /// The classic trailer's tag (`TRL,<COUNT>`); `[trailer]` says more.
    trailer_tag: Option<String>,
    header: Option<Switch<HeaderFile>>,
    trailer: Option<Switch<TrailerFile>>,
    /// The key field of every record type that does not name its own `key`.
    key_field: Option<String>,
    indicator_field: String,
    #[serde(default = "default_create")]
    create_indicator: String,
    #[serde(default = "default_delete")]
    delete_indicator: String,
    #[serde(rename = "record")]
    records: Vec<RecordFile>,
}

/// `header = false` (none), or a `[header]` table.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Switch<T> {
    On(bool),
    Table(T),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderFile {
    tag: Option<String>,
    /// The header's field count, when it is fixed.
    fields: Option<usize>,
    /// 1-based positions of the fields that hold what the file name says.
    kind: Option<usize>,
    region: Option<usize>,
    date: Option<usize>,
    seq: Option<usize>,
    /// Compare those fields with the file name (default on).
    check_name: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrailerFile {
    tag: Option<String>,
    fields: Option<usize>,
    /// 1-based position of the field that holds the number of record lines.
    count: Option<usize>,
    /// Compare it with the record lines found (default on).
    check_count: Option<bool>,
}

fn default_separator() -> String {
    ",".into()
}
fn default_true() -> bool {
    true
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
    /// `false`: a known type that is counted as ignored, never applied nor rejected.
    #[serde(default = "default_true")]
    apply: bool,
    /// The key fields (identity = type + key); default `[key_field]`.
    key: Option<Vec<String>>,
    #[serde(rename = "field", default)]
    fields: Vec<FieldFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldFile {
    name: String,
    format: String,
    #[serde(default)]
    required: bool,
    /// How a key field is compared (see [`Normalize`]).
    normalize: Option<Normalize>,
}

/// How a key field's value becomes part of the identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalize {
    /// As written.
    Exact,
    /// As a number: leading zeros dropped (`000123` and `123` are one key; `0` stays).
    /// The default for `N` and `L` fields: ESR pads numbers with zeros, and one extract
    /// padding an ID must not split a position into two identities.
    Number,
    /// Surrounding spaces dropped.
    Trim,
    /// Surrounding spaces dropped, upper case.
    Upper,
}

impl Normalize {
    pub fn apply<'a>(self, value: &'a str) -> std::borrow::Cow<'a, str> {
        use std::borrow::Cow;
        match self {
            Normalize::Exact => Cow::Borrowed(value),
            Normalize::Trim => Cow::Borrowed(value.trim()),
            Normalize::Upper => Cow::Owned(value.trim().to_uppercase()),
            Normalize::Number => {
                let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
                let whole = whole.trim_start_matches('0');
                let fraction = fraction.trim_end_matches('0');
                match (whole.is_empty(), fraction.is_empty()) {
                    (true, true) => Cow::Borrowed("0"),
                    (_, true) if whole.len() == value.len() => Cow::Borrowed(value),
                    (true, false) => Cow::Owned(format!("0.{fraction}")),
                    (false, true) => Cow::Owned(whole.to_string()),
                    (false, false) => Cow::Owned(format!("{whole}.{fraction}")),
                }
            }
        }
    }
}

/// One field of a record layout.
#[derive(Clone, Debug)]
pub struct Field {
    pub name: Arc<str>,
    pub format: Format,
    pub required: bool,
}

/// One field of a record type's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyPart {
    /// 0-based position in the record.
    pub index: usize,
    pub normalize: Normalize,
}

/// What joins the parts of a composite key in the identity (`export`'s `key`).
pub const KEY_JOIN: char = '|';

/// The layout of one record type. The record type is always field 1.
#[derive(Clone, Debug)]
pub struct RecordLayout {
    pub record_type: Arc<str>,
    pub fields: Vec<Field>,
    /// The fields a record carries as payload: all but type, key and indicator.
    pub payload_names: FieldNames,
    pub key: Vec<KeyPart>,
    indicator_index: usize,
}

/// The header record: its tag and which fields hold what the file name says (0-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderLayout {
    pub tag: String,
    pub fields: Option<usize>,
    pub kind: Option<usize>,
    pub region: Option<usize>,
    pub date: Option<usize>,
    pub seq: Option<usize>,
    /// Compare those fields with the file name.
    pub check_name: bool,
}

impl HeaderLayout {
    /// `HDR,<KIND>,<REGION>,<YYYYMMDD>,<SEQ>`, checked against the name.
    pub fn classic(tag: String) -> Self {
        Self { tag, fields: Some(5), kind: Some(1), region: Some(2), date: Some(3), seq: Some(4), check_name: true }
    }
}

/// The trailer record: its tag and the field holding the number of record lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrailerLayout {
    pub tag: String,
    pub fields: Option<usize>,
    pub count: Option<usize>,
    pub check_count: bool,
}

impl TrailerLayout {
    /// `TRL,<COUNT>`, checked.
    pub fn classic(tag: String) -> Self {
        Self { tag, fields: Some(2), count: Some(1), check_count: true }
    }
}

/// A line fault: why one record line is rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineFault(pub String);

/// A validated layout.
#[derive(Clone, Debug)]
pub struct Layout {
    pub name: String,
    pub description: String,
    /// The field separator (one byte).
    pub separator: u8,
    /// RFC 4180 quoting.
    pub quoting: bool,
    /// `None`: the file has no header record.
    pub header: Option<HeaderLayout>,
    /// `None`: the file has no trailer record (and no count to check).
    pub trailer: Option<TrailerLayout>,
    pub create_indicator: String,
    pub delete_indicator: String,
    records: HashMap<String, RecordLayout>,
    /// Known record types that are not applied: counted as ignored.
    ignored: Vec<Arc<str>>,
}

/// The layouts of a profile: one per file kind that names its own, and a default.
#[derive(Clone, Debug)]
pub struct Layouts {
    pub default: Arc<Layout>,
    pub by_kind: std::collections::BTreeMap<String, Arc<Layout>>,
}

impl Layouts {
    /// One layout for every kind.
    pub fn single(layout: Arc<Layout>) -> Self {
        Self { default: layout, by_kind: Default::default() }
    }

    /// The layout of files of `kind`.
    pub fn for_kind(&self, kind: &str) -> &Arc<Layout> {
        self.by_kind.get(kind).unwrap_or(&self.default)
    }

    /// The layout of record type `rtype` whose payload fields are `names`, in any of the
    /// layouts (a consumer reads records of every kind).
    pub fn record_with(&self, rtype: &str, names: &[&str]) -> Option<&RecordLayout> {
        std::iter::once(&self.default)
            .chain(self.by_kind.values())
            .filter_map(|l| l.record(rtype))
            .find(|r| r.payload_names.iter().map(|n| &**n).eq(names.iter().copied()))
    }

    /// Record type `rtype` in any of the layouts (the first that applies it).
    pub fn any_record(&self, rtype: &str) -> Option<&RecordLayout> {
        std::iter::once(&self.default).chain(self.by_kind.values()).find_map(|l| l.record(rtype))
    }
}

/// A record line whose fields passed the layout, before it gets its version.
#[derive(Debug)]
pub struct Checked<'a> {
    pub layout: &'a RecordLayout,
    pub deleted: bool,
}

/// What a record line is under a layout.
#[derive(Debug)]
pub enum Verdict<'a> {
    Record(Checked<'a>),
    /// A known type that is not applied (its name).
    Ignored(&'a Arc<str>),
}

fn position(what: &str, p: Option<usize>) -> Result<Option<usize>, LayoutError> {
    match p {
        Some(0) => Err(LayoutError::Invalid(format!("{what}: positions are 1-based"))),
        p => Ok(p.map(|p| p - 1)),
    }
}

fn separator_byte(s: &str) -> Result<u8, LayoutError> {
    let text = if s == "\\t" { "\t" } else { s };
    match text.as_bytes() {
        [b] if !matches!(b, b'"' | b'\r' | b'\n') && b.is_ascii() => Ok(*b),
        _ => Err(LayoutError::Invalid(format!(
            "separator {s:?}: one ASCII character (not a quote or a line end) is needed"
        ))),
    }
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
        let header = match (file.header, file.header_tag) {
            (Some(Switch::On(false)), None) => None,
            (Some(Switch::On(false)), Some(_)) => {
                return Err(invalid("header = false and header_tag: keep one".into()));
            }
            (None | Some(Switch::On(true)), tag) => Some(HeaderLayout::classic(tag.unwrap_or_else(|| "HDR".into()))),
            (Some(Switch::Table(_)), Some(_)) => {
                return Err(invalid("header_tag and [header]: name the tag in [header] only".into()));
            }
            (Some(Switch::Table(h)), None) => Some(HeaderLayout {
                tag: h.tag.ok_or_else(|| invalid("[header] needs a tag".into()))?,
                fields: h.fields,
                kind: position("header.kind", h.kind)?,
                region: position("header.region", h.region)?,
                date: position("header.date", h.date)?,
                seq: position("header.seq", h.seq)?,
                check_name: h.check_name.unwrap_or(true),
            }),
        };
        let trailer = match (file.trailer, file.trailer_tag) {
            (Some(Switch::On(false)), None) => None,
            (Some(Switch::On(false)), Some(_)) => {
                return Err(invalid("trailer = false and trailer_tag: keep one".into()));
            }
            (None | Some(Switch::On(true)), tag) => Some(TrailerLayout::classic(tag.unwrap_or_else(|| "TRL".into()))),
            (Some(Switch::Table(_)), Some(_)) => {
                return Err(invalid("trailer_tag and [trailer]: name the tag in [trailer] only".into()));
            }
            (Some(Switch::Table(t)), None) => Some(TrailerLayout {
                tag: t.tag.ok_or_else(|| invalid("[trailer] needs a tag".into()))?,
                fields: t.fields,
                count: position("trailer.count", t.count)?,
                check_count: t.check_count.unwrap_or(true),
            }),
        };
        if let Some(t) = &trailer
            && t.check_count
            && t.count.is_none()
        {
            return Err(invalid("[trailer] check_count needs the position of its count field".into()));
        }
        let tags: Vec<&str> =
            header.iter().map(|h| h.tag.as_str()).chain(trailer.iter().map(|t| t.tag.as_str())).collect();
        let mut records = HashMap::new();
        let mut ignored: Vec<Arc<str>> = Vec::new();
        for r in file.records {
            if tags.contains(&r.record_type.as_str()) {
                return Err(invalid(format!("record type {} collides with the header or trailer tag", r.record_type)));
            }
            if records.contains_key(&r.record_type) || ignored.iter().any(|t| **t == *r.record_type) {
                return Err(invalid(format!("record type {} is defined twice", r.record_type)));
            }
            if !r.apply {
                ignored.push(r.record_type.as_str().into());
                continue;
            }
            let mut fields = Vec::with_capacity(r.fields.len());
            let mut normalize = HashMap::new();
            for f in &r.fields {
                let format = f
                    .format
                    .parse()
                    .map_err(|e: String| invalid(format!("record {} field {}: {e}", r.record_type, f.name)))?;
                if fields.iter().any(|x: &Field| *x.name == *f.name) {
                    return Err(invalid(format!("record {}: field {} appears twice", r.record_type, f.name)));
                }
                if let Some(n) = f.normalize {
                    normalize.insert(f.name.clone(), n);
                }
                fields.push(Field { name: f.name.as_str().into(), format, required: f.required });
            }
            let index_of = |name: &str| fields.iter().position(|f| &*f.name == name);
            let key_names = match (&r.key, &file.key_field) {
                (Some(k), _) if !k.is_empty() => k.clone(),
                (Some(_), _) => return Err(invalid(format!("record {}: key lists no field", r.record_type))),
                (None, Some(k)) => vec![k.clone()],
                (None, None) => {
                    return Err(invalid(format!("record {}: no key (set key = [...] or key_field)", r.record_type)));
                }
            };
            let mut key = Vec::with_capacity(key_names.len());
            for name in &key_names {
                let index = index_of(name)
                    .ok_or_else(|| invalid(format!("record {} has no key field {name}", r.record_type)))?;
                let by_format = match fields[index].format {
                    Format::Digits(..) | Format::FixedDigits(..) => Normalize::Number,
                    _ => Normalize::Exact,
                };
                key.push(KeyPart { index, normalize: normalize.get(name).copied().unwrap_or(by_format) });
            }
            let indicator_index = index_of(&file.indicator_field).ok_or_else(|| {
                invalid(format!("record {} has no indicator field {}", r.record_type, file.indicator_field))
            })?;
            if key.iter().any(|k| k.index == 0) || indicator_index == 0 {
                return Err(invalid(format!("record {}: field 1 is the record type", r.record_type)));
            }
            let structural = |i: usize| i == 0 || i == indicator_index || key.iter().any(|k| k.index == i);
            let payload_names: FieldNames =
                fields.iter().enumerate().filter(|(i, _)| !structural(*i)).map(|(_, f)| f.name.clone()).collect();
            let layout = RecordLayout {
                record_type: r.record_type.as_str().into(),
                fields,
                payload_names,
                key,
                indicator_index,
            };
            records.insert(r.record_type.clone(), layout);
        }
        if records.is_empty() {
            return Err(invalid("at least one [[record]] must be applied".into()));
        }
        Ok(Self {
            name: file.name,
            description: file.description,
            separator: separator_byte(&file.separator)?,
            quoting: file.quoting,
            header,
            trailer,
            create_indicator: file.create_indicator,
            delete_indicator: file.delete_indicator,
            records,
            ignored,
        })
    }

    /// The record types applied (`record_type` order is unspecified).
    pub fn record_types(&self) -> impl Iterator<Item = &RecordLayout> {
        self.records.values()
    }

    /// The known record types that are counted as ignored.
    pub fn ignored_types(&self) -> &[Arc<str>] {
        &self.ignored
    }

    pub fn record(&self, record_type: &str) -> Option<&RecordLayout> {
        self.records.get(record_type)
    }

    /// Checks one record line's fields (already split and UTF-8) against the layout.
    pub fn check<'a>(&'a self, fields: &[&str]) -> Result<Verdict<'a>, LineFault> {
        let record_type = fields.first().copied().unwrap_or("");
        let Some(layout) = self.records.get(record_type) else {
            return match self.ignored.iter().find(|t| ***t == *record_type) {
                Some(t) => Ok(Verdict::Ignored(t)),
                None => Err(LineFault(format!("unknown record type {record_type:?}"))),
            };
        };
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
            let structural = i == 0 || i == layout.indicator_index || layout.key.iter().any(|k| k.index == i);
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
            if layout.key.len() > 1 && layout.key.iter().any(|k| k.index == i) && value.contains(KEY_JOIN) {
                return Err(LineFault(format!(
                    "field {} ({}) holds {KEY_JOIN:?}, which joins the parts of the key",
                    i + 1,
                    field.name
                )));
            }
        }
        Ok(Verdict::Record(Checked { layout, deleted }))
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
        let structural = |i: usize| i == 0 || i == self.indicator_index || self.key.iter().any(|k| k.index == i);
        let payload = (!deleted).then(|| {
            let values = fields.iter().enumerate().filter(|(i, _)| !structural(*i)).map(|(_, v)| *v);
            Fields::new(self.payload_names.clone(), values)
        });
        Record {
            record_type: self.record_type.clone(),
            key: self.key_of(fields),
            deleted,
            version,
            region: region.clone(),
            file: file.clone(),
            fields: payload,
        }
    }

    /// The identity's key of a checked line: its key fields, each normalised, joined by
    /// [`KEY_JOIN`].
    pub fn key_of(&self, fields: &[&str]) -> String {
        let mut key = String::new();
        for (i, part) in self.key.iter().enumerate() {
            if i > 0 {
                key.push(KEY_JOIN);
            }
            key.push_str(&part.normalize.apply(fields.get(part.index).copied().unwrap_or("")));
        }
        key
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
        match l.check(&refs) {
            Ok(Verdict::Record(c)) => Ok(c.deleted),
            Ok(Verdict::Ignored(t)) => Err(format!("ignored {t}")),
            Err(e) => Err(e.0),
        }
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
        assert!(Format::Digits(3, 0).check("12").is_ok());
        assert!(Format::Digits(3, 0).check("1234").is_err());
        assert!(Format::Digits(3, 0).check("1a").is_err());
        assert!(Format::Digits(3, 0).check("1.5").is_err());
        assert!(Format::FixedDigits(4, 0).check("123").is_err());
        assert!(Format::Fixed(1).check("é").is_ok());
        assert!(Format::Text(2).check("éé").is_ok());
    }

    #[test]
    fn decimal_formats() {
        assert_eq!("N(5,2)".parse::<Format>(), Ok(Format::Digits(5, 2)));
        assert_eq!("L(5, 2)".parse::<Format>(), Ok(Format::FixedDigits(5, 2)));
        assert_eq!(Format::Digits(5, 2).to_string(), "N(5,2)");
        assert!("N(2,2)".parse::<Format>().is_err(), "at least one digit before the point");
        assert!("X(5,2)".parse::<Format>().is_err());
        let n = Format::Digits(5, 2);
        for ok in ["12", "123.4", "123.45", "0.5"] {
            assert!(n.check(ok).is_ok(), "{ok}");
        }
        for bad in ["1234.56", "1.234", ".5", "5.", "1,5", "-1"] {
            assert!(n.check(bad).is_err(), "{bad}");
        }
        let l = Format::FixedDigits(5, 2);
        assert!(l.check("012.50").is_ok());
        for bad in ["12.50", "012.5", "01250", "012,50"] {
            assert!(l.check(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_normalisation() {
        assert_eq!(Normalize::Number.apply("000123"), "123");
        assert_eq!(Normalize::Number.apply("123"), "123");
        assert_eq!(Normalize::Number.apply("000"), "0");
        assert_eq!(Normalize::Number.apply("0012.500"), "12.5");
        assert_eq!(Normalize::Number.apply("000.50"), "0.5");
        assert_eq!(Normalize::Exact.apply(" 0a "), " 0a ");
        assert_eq!(Normalize::Trim.apply(" 0a "), "0a");
        assert_eq!(Normalize::Upper.apply(" ab "), "AB");
        // N fields are keys as numbers by default
        let l = Layout::default_esr();
        let fields = por(&[(1, "000123456")]);
        let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
        assert_eq!(l.record("POR").unwrap().key_of(&refs), "123456");
    }

    const PIPED: &str = r#"
name = "piped"
separator = "|"
quoting = false
header = false
trailer = false
indicator_field = "flag"
create_indicator = "U"
delete_indicator = "X"

[[record]]
type = "ASG"
apply = false

[[record]]
type = "POS"
key = ["office", "position_id"]
[[record.field]]
name = "type"
format = "F(3)"
[[record.field]]
name = "office"
format = "X(3)"
normalize = "upper"
[[record.field]]
name = "position_id"
format = "N(15)"
[[record.field]]
name = "flag"
format = "F(1)"
[[record.field]]
name = "fte"
format = "N(4,2)"
"#;

    #[test]
    fn a_layout_with_the_new_features() {
        let l = Layout::from_toml(PIPED).unwrap();
        assert_eq!((l.separator, l.quoting, &l.header, &l.trailer), (b'|', false, &None, &None));
        assert_eq!(l.ignored_types().len(), 1);
        let line = ["POS", "sev", "00042", "U", "1.5"];
        let Ok(Verdict::Record(c)) = l.check(&line) else { panic!("a record") };
        assert_eq!(c.layout.key_of(&line), "SEV|42");
        assert!(!c.deleted);
        let v = Version { date: chrono::NaiveDate::from_ymd_opt(2022, 7, 30).unwrap(), seq: 1, line: 1 };
        let r = c.layout.build(&line, false, v, &Arc::from("SEV"), &Arc::from("f"));
        assert_eq!(r.fields.unwrap().to_object_json().unwrap(), r#"{"fte":"1.5"}"#);
        assert!(matches!(l.check(&["ASG", "anything", "at all"]), Ok(Verdict::Ignored(t)) if &**t == "ASG"));
        assert!(l.check(&["POS", "s|v", "1", "U", ""]).is_err(), "a key part holding the joint");
        assert!(l.check(&["POS", "SEV", "1", "C", ""]).unwrap_err().0.contains("bad indicator"));
    }

    #[test]
    fn old_layouts_and_switches_read_as_before() {
        let l = Layout::default_esr();
        assert_eq!(l.header, Some(HeaderLayout::classic("HDR".into())));
        assert_eq!(l.trailer, Some(TrailerLayout::classic("TRL".into())));
        assert_eq!((l.separator, l.quoting), (b',', true));
        let tab = PIPED.replace("separator = \"|\"", "separator = \"\\t\"");
        assert_eq!(Layout::from_toml(&tab).unwrap().separator, b'\t');
        let both = PIPED.replace("header = false", "header = false\nheader_tag = \"H\"");
        assert!(Layout::from_toml(&both).is_err());
        let table = PIPED.replace("header = false", "header = { tag = \"H\", seq = 2, check_name = false }");
        let h = Layout::from_toml(&table).unwrap().header.unwrap();
        assert_eq!((h.tag.as_str(), h.seq, h.check_name, h.kind), ("H", Some(1), false, None));
        assert!(Layout::from_toml(&PIPED.replace("separator = \"|\"", "separator = \"||\"")).is_err());
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
