//! The record message: versioned JSON, described by `schemas/records-message.schema.json`.
//!
//! One message carries consecutive record lines of one file (at most
//! `records_per_message`). Its id is `FILE/GENERATION/FIRST_LINE`: deterministic, so a
//! republished or redelivered message is recognised by the store's receipts. A record
//! split out of a message by a consumer (to dead-letter one poison line) gets the id
//! `FILE/GENERATION/LINE/1`.

use crate::core::record::{Fields, Record};
use crate::core::schema::Layout;
use crate::core::version::Version;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

pub const SCHEMA: &str = "esr-ingest.records/1";

#[derive(Debug, Serialize, Deserialize)]
pub struct Message {
    pub schema: String,
    pub file: String,
    pub region: String,
    pub date: NaiveDate,
    pub seq: u64,
    pub generation: u32,
    pub records: Vec<WireRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WireRecord {
    pub line: u64,
    #[serde(rename = "type")]
    pub record_type: String,
    pub key: String,
    pub deleted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<HashMap<String, String>>,
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
    let first = records.first().ok_or_else(|| Poison("an empty message".into()))?;
    let mut out = Vec::with_capacity(records.len() * 320 + 160);
    let head = serde_json::json!({
        "schema": SCHEMA,
        "file": &*first.file,
        "region": &*first.region,
        "date": first.version.date,
        "seq": first.version.seq,
        "generation": generation,
    });
    let head = head.to_string();
    out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    out.extend_from_slice(b",\"records\":[");
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let mut rec = serde_json::json!({
            "line": r.version.line, "type": &*r.record_type, "key": &r.key, "deleted": r.deleted,
        })
        .to_string();
        if let Some(f) = &r.fields {
            let fields = f.to_object_json().map_err(Poison)?;
            rec.pop();
            rec.push_str(",\"fields\":");
            rec.push_str(&fields);
            rec.push('}');
        }
        out.extend_from_slice(rec.as_bytes());
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

/// Decodes a message and checks it against the layout.
pub fn decode(body: &[u8], layout: &Layout) -> Result<(Message, Vec<Record>), Poison> {
    let message: Message = serde_json::from_slice(body).map_err(|e| Poison(format!("not a record message: {e}")))?;
    if message.schema != SCHEMA {
        return Err(Poison(format!("message schema {:?}; this build reads {SCHEMA:?}", message.schema)));
    }
    let (file, region): (Arc<str>, Arc<str>) = (message.file.as_str().into(), message.region.as_str().into());
    let mut records = Vec::with_capacity(message.records.len());
    for w in &message.records {
        let rl = layout
            .record(&w.record_type)
            .ok_or_else(|| Poison(format!("line {}: unknown record type {:?}", w.line, w.record_type)))?;
        let fields = match (&w.fields, w.deleted) {
            (_, true) => None,
            (None, false) => return Err(Poison(format!("line {}: a change without fields", w.line))),
            (Some(values), false) => {
                if values.len() != rl.payload_names.len() {
                    return Err(Poison(format!(
                        "line {}: {} fields, the layout of {} has {}",
                        w.line,
                        values.len(),
                        w.record_type,
                        rl.payload_names.len()
                    )));
                }
                let mut ordered = Vec::with_capacity(values.len());
                for name in rl.payload_names.iter() {
                    let v = values.get(&**name).ok_or_else(|| {
                        Poison(format!("line {}: field {name} missing for {}", w.line, w.record_type))
                    })?;
                    ordered.push(v.as_str());
                }
                Some(Fields::new(rl.payload_names.clone(), ordered))
            }
        };
        records.push(Record {
            record_type: rl.record_type.clone(),
            key: w.key.clone(),
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
        let (m, back) = decode(&body, &Layout::default_esr()).unwrap();
        assert_eq!((m.generation, m.seq, m.file.as_str()), (4, 1157, "DE_SEV_RMC_20220730_00001157.DAT"));
        assert_eq!(back, records);
    }

    #[test]
    fn foreign_messages_are_poison() {
        let layout = Layout::default_esr();
        assert!(decode(b"{}", &layout).is_err());
        let body = String::from_utf8(encode(&[record(2, false)], 1).unwrap()).unwrap();
        assert!(decode(body.replace("POR", "XYZ").as_bytes(), &layout).unwrap_err().0.contains("unknown record type"));
        let body = body.replace(SCHEMA, "esr-ingest.records/9");
        assert!(decode(body.as_bytes(), &layout).unwrap_err().0.contains("schema"));
    }
}
