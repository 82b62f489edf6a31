//! Records as they travel from the parser to a store.

use crate::core::version::Version;
use std::sync::Arc;

/// One parsed record line. Its identity is `(record_type, key)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub record_type: Arc<str>,
    pub key: String,
    /// `true` for a `D` line: stored as a tombstone that keeps its version.
    pub deleted: bool,
    pub version: Version,
    pub region: Arc<str>,
    pub file: Arc<str>,
    /// The field values; `None` for a tombstone.
    pub fields: Option<Fields>,
}

/// The names of a record type's payload fields in layout order, shared by every record
/// of that type.
pub type FieldNames = Arc<[Arc<str>]>;

/// A record's payload: its layout's field names and their values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fields {
    pub names: FieldNames,
    /// The values as a JSON array text in the order of `names` (rendered once, by the
    /// parser). Stores keep this compact form with a reference to the names.
    pub values_json: String,
}

impl Fields {
    pub fn new<'a>(names: FieldNames, values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut out = String::with_capacity(160);
        push_json_strings(&mut out, values);
        Self { names, values_json: out }
    }

    /// The payload as a JSON object text in layout order (the exported form).
    pub fn to_object_json(&self) -> Result<String, String> {
        object_json(&self.names, &self.values_json)
    }
}

/// Pairs field names with a JSON array of values into a JSON object text.
pub fn object_json<S: AsRef<str>>(names: &[S], values_json: &str) -> Result<String, String> {
    let values: Vec<String> =
        serde_json::from_str(values_json).map_err(|e| format!("field values are not a JSON array of strings: {e}"))?;
    if values.len() != names.len() {
        return Err(format!("{} field values for {} field names", values.len(), names.len()));
    }
    Ok(fields_json(names.iter().map(AsRef::as_ref).zip(values.iter().map(String::as_str))))
}

/// Renders named values as a JSON object text, keeping their order.
pub fn fields_json<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::with_capacity(256);
    out.push('{');
    for (i, (name, value)) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, name);
        out.push(':');
        push_json_string(&mut out, value);
    }
    out.push('}');
    out
}

/// Appends `items` as a JSON array of strings.
pub fn push_json_strings<'a>(out: &mut String, items: impl IntoIterator<Item = &'a str>) {
    out.push('[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(out, item);
    }
    out.push(']');
}

/// Appends `s` as a JSON string (quoted, escaped where needed).
pub fn push_json_string(out: &mut String, s: &str) {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        // serde_json's escaping; serialising a &str cannot fail.
        out.push_str(&serde_json::to_string(s).unwrap_or_default());
    }
}

/// A rejected line: kept with its file, line number and reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    pub file: Arc<str>,
    pub line: u64,
    pub reason: String,
    /// The line as read (invalid UTF-8 replaced), for the operator.
    pub raw: String,
}

/// What happened to the lines of one batch or file under the version rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub applied: u64,
    pub stale: u64,
    pub unchanged: u64,
    pub rejected: u64,
    /// Sent to the dead-letter queue by a consumer (broker delivery only).
    pub dead_lettered: u64,
    /// Records of the region turned into tombstones when the file was applied (a full
    /// file's removals, see `core::full`). Not lines of the file: not in [`Tally::total`].
    pub removed: u64,
    /// Lines of record types the layout knows and does not apply.
    pub ignored: u64,
}

impl Tally {
    /// Counts one line the version rule decided.
    pub fn count(&mut self, decision: crate::core::version::Decision) {
        use crate::core::version::Decision;
        match decision {
            Decision::Apply => self.applied += 1,
            Decision::Stale => self.stale += 1,
            Decision::Same => self.unchanged += 1,
        }
    }

    /// Lines accounted for.
    pub fn total(&self) -> u64 {
        self.applied + self.stale + self.unchanged + self.rejected + self.dead_lettered + self.ignored
    }
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Self) {
        self.applied += o.applied;
        self.stale += o.stale;
        self.unchanged += o.unchanged;
        self.rejected += o.rejected;
        self.dead_lettered += o.dead_lettered;
        self.removed += o.removed;
        self.ignored += o.ignored;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_through_the_compact_form() {
        let names: FieldNames = vec![Arc::from("title"), Arc::from("code")].into();
        let f = Fields::new(names, ["Nurse, \"B5\"", ""]);
        assert_eq!(f.values_json, r#"["Nurse, \"B5\"",""]"#);
        assert_eq!(f.to_object_json().unwrap(), r#"{"title":"Nurse, \"B5\"","code":""}"#);
        assert!(object_json(&["a"], "[\"x\",\"y\"]").is_err());
    }

    #[test]
    fn fields_json_escapes_and_keeps_order() {
        let text = fields_json([("b", "plain"), ("a", "quote \" back\\ é\n")]);
        assert!(text.starts_with("{\"b\":\"plain\","));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["a"], "quote \" back\\ é\n");
    }
}
