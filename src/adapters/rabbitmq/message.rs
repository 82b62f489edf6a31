//! The record message: versioned JSON, described by `schemas/records-message.schema.json`.
//!
//! One message carries consecutive record lines of one file (at most
//! `records_per_message`). Its id is `FILE/GENERATION/FIRST_LINE`: deterministic, so a
//! republished or redelivered message is recognised by the store's receipts. A record
//! split out of a message by a consumer (to dead-letter one poison line) gets the id
//! `FILE/GENERATION/LINE/1`.

use crate::core::record::{Fields, Record, push_json_string, push_json_strings};
use crate::core::schema::Layouts;
use crate::core::version::Version;
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;

pub const SCHEMA: &str = "esr-ingest.records/1";

/// The message envelope. `fields` names each record type's payload fields once; every
/// record carries its values in that order.
#[derive(Debug, Deserialize)]
pub struct Message {
    pub schema: String,
    pub file: String,
    pub region: String,
    pub date: NaiveDate,
    pub seq: u64,
    pub generation: u32,
    #[serde(default)]
    pub fields: HashMap<String, Vec<String>>,
    pub records: Vec<WireRecord>,
}

#[derive(Debug, Deserialize)]
pub struct WireRecord {
    pub line: u64,
    #[serde(rename = "type")]
    pub record_type: String,
    pub key: String,
    pub deleted: bool,
    /// A JSON array of strings, kept as text: stores keep exactly this compact form.
    #[serde(default)]
    pub values: Option<Box<RawValue>>,
}

/// The number of values in a JSON array of strings (each value is checked to be a
/// string, and none is copied unless it has escapes).
struct StringCount(usize);

/// One value, borrowed from the message text unless it has escapes.
#[derive(Deserialize)]
struct Value<'a>(
    #[serde(borrow)]
    #[allow(dead_code)]
    std::borrow::Cow<'a, str>,
);

impl<'de> Deserialize<'de> for StringCount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Counter;
        impl<'de> serde::de::Visitor<'de> for Counter {
            type Value = StringCount;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of strings")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<StringCount, A::Error> {
                let mut n = 0;
                while seq.next_element::<Value<'de>>()?.is_some() {
                    n += 1;
                }
                Ok(StringCount(n))
            }
        }
        d.deserialize_seq(Counter)
    }
}

/// A message that cannot be applied whatever happens to the store: dead-lettered.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Poison(pub String);

pub fn message_id(file: &str, generation: u32, first_line: u64) -> String {
    format!("{file}/{generation}/{first_line}")
}

pub fn single_record_id(file: &str, generation: u32, line: u64) -> String {
    format!("{file}/{generation}/{line}/1")
}

/// Encodes records of one file (the caller keeps them to one file, in line order).
pub fn encode(records: &[Record], generation: u32) -> Result<Vec<u8>, Poison> {
    use std::fmt::Write;
    let first = records.first().ok_or_else(|| Poison("an empty message".into()))?;
    let values: usize = records.iter().filter_map(|r| r.fields.as_ref()).map(|f| f.values_json.len()).sum();
    let mut out = String::with_capacity(values + records.len() * 64 + 400);
    // Writing to a String cannot fail.
    let _ = write!(out, "{{\"schema\":\"{SCHEMA}\",\"file\":");
    push_json_string(&mut out, &first.file);
    out.push_str(",\"region\":");
    push_json_string(&mut out, &first.region);
    let _ = write!(
        out,
        ",\"date\":\"{}\",\"seq\":{},\"generation\":{generation},\"fields\":{{",
        first.version.date.format("%Y-%m-%d"),
        first.version.seq
    );
    let mut named: Vec<&str> = Vec::new();
    for r in records {
        if let Some(f) = &r.fields
            && !named.contains(&&*r.record_type)
        {
            if !named.is_empty() {
                out.push(',');
            }
            named.push(&r.record_type);
            push_json_string(&mut out, &r.record_type);
            out.push(':');
            push_json_strings(&mut out, f.names.iter().map(|n| &**n));
        }
    }
    out.push_str("},\"records\":[");
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"line\":{},\"type\":", r.version.line);
        push_json_string(&mut out, &r.record_type);
        out.push_str(",\"key\":");
        push_json_string(&mut out, &r.key);
        out.push_str(if r.deleted { ",\"deleted\":true" } else { ",\"deleted\":false" });
        if let Some(f) = &r.fields {
            out.push_str(",\"values\":");
            out.push_str(&f.values_json);
        }
        out.push('}');
    }
    out.push_str("]}");
    Ok(out.into_bytes())
}

/// Decodes a message and checks it against the layouts (a record type's fields must be
/// those of one of them). The records move out of the message: the returned
/// [`Message`] has its header only (`records` empty).
pub fn decode(body: &[u8], layouts: &Layouts) -> Result<(Message, Vec<Record>), Poison> {
    let mut message: Message =
        serde_json::from_slice(body).map_err(|e| Poison(format!("not a record message: {e}")))?;
    if message.schema != SCHEMA {
        return Err(Poison(format!("message schema {:?}; this build reads {SCHEMA:?}", message.schema)));
    }
    let mut by_type = std::collections::HashMap::new();
    for (rtype, names) in &message.fields {
        let listed: Vec<&str> = names.iter().map(String::as_str).collect();
        let rl = layouts.record_with(rtype, &listed).ok_or_else(|| match layouts.any_record(rtype) {
            Some(_) => Poison(format!("the fields of {rtype} differ from this build's layouts: {names:?}")),
            None => Poison(format!("unknown record type {rtype:?}")),
        })?;
        by_type.insert(rtype.as_str(), rl);
    }
    let (file, region): (Arc<str>, Arc<str>) = (message.file.as_str().into(), message.region.as_str().into());
    let wire = std::mem::take(&mut message.records);
    let mut records = Vec::with_capacity(wire.len());
    for w in wire {
        let rl = by_type
            .get(w.record_type.as_str())
            .copied()
            .or_else(|| layouts.any_record(&w.record_type))
            .ok_or_else(|| Poison(format!("line {}: unknown record type {:?}", w.line, w.record_type)))?;
        let fields = match (w.values, w.deleted) {
            (_, true) => None,
            (None, false) => return Err(Poison(format!("line {}: a change without values", w.line))),
            (Some(values), false) => {
                if !message.fields.contains_key(&w.record_type) {
                    return Err(Poison(format!("line {}: no field names for {}", w.line, w.record_type)));
                }
                let StringCount(count) = serde_json::from_str(values.get())
                    .map_err(|e| Poison(format!("line {}: values are not an array of strings: {e}", w.line)))?;
                if count != rl.payload_names.len() {
                    return Err(Poison(format!(
                        "line {}: {count} values, the layout of {} has {}",
                        w.line,
                        w.record_type,
                        rl.payload_names.len()
                    )));
                }
                Some(Fields { names: rl.payload_names.clone(), values_json: Box::<str>::from(values).into_string() })
            }
        };
        records.push(Record {
            record_type: rl.record_type.clone(),
            key: w.key,
            deleted: w.deleted,
            version: Version { date: message.date, seq: message.seq, line: w.line },
            region: region.clone(),
            file: file.clone(),
            fields,
        });
    }
    Ok((message, records))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::schema::Layout;

    fn esr() -> Layouts {
        Layouts::single(Arc::new(Layout::default_esr()))
    }

    fn record(line: u64, deleted: bool) -> Record {
        let layout = Layout::default_esr();
        let rl = layout.record("POR").unwrap();
        let values: Vec<String> = (0..rl.payload_names.len()).map(|i| format!("v{i}, \"q\"")).collect();
        Record {
            record_type: "POR".into(),
            key: "123".into(),
            deleted,
            version: Version { date: NaiveDate::from_ymd_opt(2022, 7, 30).unwrap(), seq: 1157, line },
            region: "SEV".into(),
            file: "DE_SEV_RMC_20220730_00001157.DAT".into(),
            fields: (!deleted).then(|| Fields::new(rl.payload_names.clone(), values.iter().map(String::as_str))),
        }
    }

    #[test]
    fn messages_round_trip_in_layout_order() {
        let records = vec![record(2, false), record(3, true)];
        let body = encode(&records, 4).unwrap();
        let (m, back) = decode(&body, &esr()).unwrap();
        assert_eq!((m.generation, m.seq, m.file.as_str()), (4, 1157, "DE_SEV_RMC_20220730_00001157.DAT"));
        assert_eq!(back, records);
    }

    #[test]
    fn foreign_messages_are_poison() {
        let layout = esr();
        assert!(decode(b"{}", &layout).is_err());
        let body = String::from_utf8(encode(&[record(2, false)], 1).unwrap()).unwrap();
        assert!(decode(body.replace("POR", "XYZ").as_bytes(), &layout).unwrap_err().0.contains("unknown record type"));
        let renamed = body.replace("position_title", "title");
        assert!(decode(renamed.as_bytes(), &layout).unwrap_err().0.contains("differ"));
        let short = body.replace("[\"v0, \\\"q\\\"\",", "[");
        assert!(decode(short.as_bytes(), &layout).unwrap_err().0.contains("values"), "{short}");
        let body = body.replace(SCHEMA, "esr-ingest.records/9");
        assert!(decode(body.as_bytes(), &layout).unwrap_err().0.contains("schema"));
    }

    /// With a layout per kind, a message of either layout's records is read with its own.
    #[test]
    fn messages_of_every_kind_are_read_with_their_layout() {
        let other =
            Layout::from_toml(&crate::core::schema::DEFAULT_LAYOUT_TOML.replace("position_title", "title")).unwrap();
        let mut layouts = esr();
        layouts.by_kind.insert("APC".into(), Arc::new(other));
        let body = String::from_utf8(encode(&[record(2, false)], 1).unwrap()).unwrap();
        assert!(decode(body.as_bytes(), &layouts).is_ok());
        let (_, back) = decode(body.replace("position_title", "title").as_bytes(), &layouts).unwrap();
        assert!(back[0].fields.as_ref().unwrap().names.iter().any(|n| &**n == "title"));
    }
}
