//! Records in MongoDB: one document per identity, written by a versioned upsert.
//!
//! Invariant (the version rule, `core::version`): a record document is written only by
//! `update {_id, v: {$lt: incoming}} upsert` where `v` is the version as a fixed-width
//! string whose byte order is the version order `(date, SEQ, line)`. When a newer or
//! equal version is stored, the filter does not match, the upsert tries to insert the
//! existing `_id` and the server answers duplicate key (11000): that line is a no-op. The
//! stored version is then read to tell *stale* from *the same line again*; if it is
//! older after all, two first inserts raced and the line is tried once more.
//!
//! Writes go out as unordered `update` commands of up to [`CHUNK`] statements (works on
//! MongoDB 6.0+, unlike the driver's `bulk_write`), with the store's write concern.

use super::errors::{DUPLICATE_KEY, is_transient_code, map_err};
use super::numbers::int;
use crate::core::record::{Record, Tally, fields_json};
use crate::core::version::{Decision, Version, decide_in_order};
use crate::ports::store::{StoreError, StoredRecord};
use chrono::NaiveDate;
use mongodb::Database;
use mongodb::bson::{Bson, Document, doc};
use std::collections::HashMap;
use std::time::Duration;

pub(super) const RECORDS: &str = "records";
/// Statements per `update` command (well below the server's 100,000 and 16 MiB limits).
const CHUNK: usize = 1000;
/// Rounds for lines that hit a transient error or a first-insert race.
const ROUNDS: u32 = 5;

/// The version as a string whose byte order is the version order.
pub(super) fn version_key(v: &Version) -> String {
    format!("{:08}.{:020}.{:020}", v.date_number(), v.seq, v.line)
}

/// `_id` of an identity: `TYPE/KEY`. Types have a fixed width and `/` sorts below the
/// digits, so `_id` order is (type, key) order.
pub(super) fn record_id(rtype: &str, key: &str) -> String {
    format!("{rtype}/{key}")
}

pub(super) fn as_i64(n: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Rejected(format!("{what} {n} does not fit a 64-bit signed integer")))
}

fn record_doc(r: &Record) -> Result<Document, StoreError> {
    let fields = match &r.fields {
        None => Bson::Null,
        Some(f) => {
            let values: Vec<String> = serde_json::from_str(&f.values_json)
                .map_err(|e| StoreError::Rejected(format!("record {} {}: {e}", r.record_type, r.key)))?;
            let mut d = Document::new();
            for (name, value) in f.names.iter().zip(values) {
                d.insert(name.to_string(), value);
            }
            Bson::Document(d)
        }
    };
    Ok(doc! {
        "t": &*r.record_type,
        "k": &r.key,
        "deleted": r.deleted,
        "region": &*r.region,
        "file": &*r.file,
        "v": version_key(&r.version),
        "vd": r.version.date.format("%Y-%m-%d").to_string(),
        "vs": as_i64(r.version.seq, "SEQ")?,
        "vl": as_i64(r.version.line, "line")?,
        "fields": fields,
        // written by a line: not (or no longer) removed by a full file
        "swept": false,
        "sv": Bson::Null,
    })
}

/// Applies records under the version rule; returns what happened to their lines.
pub(super) async fn apply_versioned(
    db: &Database,
    write_concern: &Document,
    records: &[Record],
) -> Result<Tally, StoreError> {
    let mut tally = [Tally::default()];
    let slotted: Vec<(usize, &Record)> = records.iter().map(|r| (0, r)).collect();
    apply_slotted(db, write_concern, &slotted, &mut tally).await?;
    Ok(tally[0])
}

/// Applies `(slot, record)` pairs under the version rule, in `update` commands of up to
/// [`CHUNK`] statements, adding each line's outcome to `tallies[slot]`, as a line-by-line
/// pass in identity-then-version order would count it.
///
/// An identity with several lines in a chunk is decided in memory against its stored
/// version, read before the command: only its newest applied line is sent. Judging such
/// lines after the command would compare them with a later line of the same call (an
/// equal version seen again would count as stale). When that one statement does not
/// apply (another writer came first), the identity is read and decided again.
pub(super) async fn apply_slotted(
    db: &Database,
    write_concern: &Document,
    records: &[(usize, &Record)],
    tallies: &mut [Tally],
) -> Result<(), StoreError> {
    for chunk in records.chunks(CHUNK) {
        let mut pending = work_of(chunk);
        let mut round = 0;
        while !pending.is_empty() {
            round += 1;
            if round > ROUNDS {
                let (_, first) = first_line(&pending[0]);
                return Err(StoreError::Io(format!(
                    "{} record writes still failing after {ROUNDS} rounds (first: {} {})",
                    pending.len(),
                    first.record_type,
                    first.key
                )));
            }
            if round > 1 {
                tokio::time::sleep(Duration::from_millis(50 * u64::from(round))).await;
            }
            pending = upsert_round(db, write_concern, pending, tallies).await?;
        }
    }
    Ok(())
}

/// The lines of one identity in a chunk: alone, or several (two or more, in version
/// order; `work_of` builds them so, which makes `lines[0]` safe).
enum Work<'a> {
    One(usize, &'a Record),
    Several(Vec<(usize, &'a Record)>),
}

/// The chunk grouped by identity, in order of first appearance; several lines of one
/// identity sorted by version (stably: equal versions keep their order).
fn work_of<'a>(chunk: &[(usize, &'a Record)]) -> Vec<Work<'a>> {
    let mut at: HashMap<(&str, &str), usize> = HashMap::new();
    let mut groups: Vec<Vec<(usize, &'a Record)>> = Vec::new();
    for &(slot, r) in chunk {
        let i = *at.entry((&*r.record_type, r.key.as_str())).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[i].push((slot, r));
    }
    groups
        .into_iter()
        .map(|mut lines| match lines.as_slice() {
            [(slot, r)] => Work::One(*slot, r),
            _ => {
                lines.sort_by_key(|(_, r)| r.version);
                Work::Several(lines)
            }
        })
        .collect()
}

/// The lines of one identity decided against `stored` (a [`version_key`]), in version
/// order, and the newest line applied, if any.
fn decide_lines<'a>(
    stored: Option<&str>,
    lines: &[(usize, &'a Record)],
) -> Result<(Vec<Decision>, Option<&'a Record>), StoreError> {
    let stored = stored.map(version_of_key).transpose()?;
    let (decisions, newest) = decide_in_order(stored, lines.iter().map(|(_, r)| r.version));
    Ok((decisions, newest.and_then(|i| lines.get(i)).map(|(_, r)| *r)))
}

/// Inverse of [`version_key`].
fn version_of_key(key: &str) -> Result<Version, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("records: bad version {key:?}"));
    let mut parts = key.split('.');
    let mut number = || parts.next().and_then(|p| p.parse::<u64>().ok()).ok_or_else(corrupt);
    let (date, seq, line) = (number()?, number()?, number()?);
    let date = u32::try_from(date).ok().and_then(Version::date_from_number).ok_or_else(corrupt)?;
    Ok(Version { date, seq, line })
}

fn count(tallies: &mut [Tally], lines: &[(usize, &Record)], decisions: &[Decision]) {
    for ((slot, _), d) in lines.iter().zip(decisions) {
        tallies[*slot].count(*d);
    }
}

/// One unordered `update` command; returns the work to try again.
async fn upsert_round<'a>(
    db: &Database,
    write_concern: &Document,
    pending: Vec<Work<'a>>,
    tallies: &mut [Tally],
) -> Result<Vec<Work<'a>>, StoreError> {
    // identities with several lines: their stored versions, read before the command
    let several: Vec<&Record> = pending
        .iter()
        .filter_map(|w| match w {
            Work::Several(lines) => Some(lines[0].1),
            Work::One(..) => None,
        })
        .collect();
    let stored_before = if several.is_empty() { HashMap::new() } else { stored_versions(db, &several).await? };
    // each statement's work item, with the decisions of a `Several` one
    let mut sent: Vec<(Work<'a>, Vec<Decision>)> = Vec::with_capacity(pending.len());
    let mut updates = Vec::with_capacity(pending.len());
    for work in pending {
        let (decisions, line) = match &work {
            Work::One(_, r) => (Vec::new(), *r),
            Work::Several(lines) => {
                let id = record_id(&lines[0].1.record_type, &lines[0].1.key);
                let (decisions, to_write) = decide_lines(stored_before.get(&id).map(String::as_str), lines)?;
                match to_write {
                    Some(r) => (decisions, r),
                    None => {
                        count(tallies, lines, &decisions); // nothing to write: all stale or the same
                        continue;
                    }
                }
            }
        };
        updates.push(doc! {
            "q": { "_id": record_id(&line.record_type, &line.key), "v": { "$lt": version_key(&line.version) } },
            "u": { "$set": record_doc(line)? },
            "upsert": true,
            "multi": false,
        });
        sent.push((work, decisions));
    }
    if updates.is_empty() {
        return Ok(Vec::new());
    }
    let reply = db
        .run_command(
            doc! { "update": RECORDS, "updates": updates, "ordered": false, "writeConcern": write_concern.clone() },
        )
        .await
        .map_err(map_err)?;
    if let Ok(wce) = reply.get_document("writeConcernError") {
        return Err(StoreError::Io(format!("mongodb write concern not satisfied: {wce}")));
    }
    let failed = write_errors(&reply);
    let mut duplicates = Vec::new();
    let mut again = Vec::new();
    for (i, (work, decisions)) in sent.into_iter().enumerate() {
        match (failed.get(&i), work) {
            (None, Work::One(slot, _)) => tallies[slot].applied += 1,
            (None, Work::Several(lines)) => count(tallies, &lines, &decisions),
            (Some((DUPLICATE_KEY, _)), Work::One(slot, r)) => duplicates.push((slot, r)),
            // another writer came first: read and decide again
            (Some((DUPLICATE_KEY, _)), work @ Work::Several(_)) => again.push(work),
            (Some((code, _)), work) if is_transient_code(*code) => again.push(work),
            (Some((code, message)), work) => {
                let (_, r) = first_line(&work);
                return Err(StoreError::Rejected(format!(
                    "mongodb refused record {} {} (code {code}): {message}",
                    r.record_type, r.key
                )));
            }
        }
    }
    if !duplicates.is_empty() {
        let records: Vec<&Record> = duplicates.iter().map(|(_, r)| *r).collect();
        let stored = stored_versions(db, &records).await?;
        for (slot, r) in duplicates {
            let incoming = version_key(&r.version);
            match stored.get(&record_id(&r.record_type, &r.key)) {
                Some(v) if *v == incoming => tallies[slot].unchanged += 1,
                Some(v) if *v > incoming => tallies[slot].stale += 1,
                _ => again.push(Work::One(slot, r)), // an older first insert won a race: try once more
            }
        }
    }
    Ok(again)
}

/// The first line of a work item (for an error message).
fn first_line<'a>(work: &Work<'a>) -> (usize, &'a Record) {
    match work {
        Work::One(slot, r) => (*slot, r),
        Work::Several(lines) => lines[0],
    }
}

/// The `writeErrors` of a write command's reply: statement index → (code, message).
pub(super) fn write_errors(reply: &Document) -> HashMap<usize, (i32, String)> {
    let mut failed = HashMap::new();
    if let Ok(errors) = reply.get_array("writeErrors") {
        for e in errors.iter().filter_map(Bson::as_document) {
            let index = int(e.get("index")).unwrap_or(-1);
            let code = int(e.get("code")).unwrap_or(0) as i32;
            let message = e.get_str("errmsg").unwrap_or("").to_string();
            failed.insert(usize::try_from(index).unwrap_or(usize::MAX), (code, message));
        }
    }
    failed
}

async fn stored_versions(db: &Database, records: &[&Record]) -> Result<HashMap<String, String>, StoreError> {
    let ids: Vec<String> = records.iter().map(|r| record_id(&r.record_type, &r.key)).collect();
    let mut cursor = db
        .collection::<Document>(RECORDS)
        .find(doc! { "_id": { "$in": ids } })
        .projection(doc! { "v": 1 })
        .await
        .map_err(map_err)?;
    let mut out = HashMap::new();
    while cursor.advance().await.map_err(map_err)? {
        let d: Document = cursor.deserialize_current().map_err(map_err)?;
        if let (Ok(id), Ok(v)) = (d.get_str("_id"), d.get_str("v")) {
            out.insert(id.to_string(), v.to_string());
        }
    }
    Ok(out)
}

/// A record document read back.
pub(super) fn stored_record(d: &Document) -> Result<StoredRecord, StoreError> {
    let id = d.get_str("_id").unwrap_or("?").to_string();
    let corrupt = |what: &str| StoreError::Corrupt(format!("records document {id}: {what}"));
    let text = |k: &str| d.get_str(k).map(str::to_string).map_err(|_| corrupt(k));
    let date = NaiveDate::parse_from_str(d.get_str("vd").map_err(|_| corrupt("vd"))?, "%Y-%m-%d")
        .map_err(|_| corrupt("vd"))?;
    let number = |k: &str| int(d.get(k)).and_then(|n| u64::try_from(n).ok()).ok_or_else(|| corrupt(k));
    // A boolean; read 0/1 too (the wire stand-in used in CI stores `$set` booleans so).
    let deleted = match d.get("deleted") {
        Some(Bson::Boolean(b)) => *b,
        other => int(other).map(|n| n != 0).ok_or_else(|| corrupt("deleted"))?,
    };
    let fields_json = match d.get("fields") {
        Some(Bson::Document(f)) => {
            let mut pairs = Vec::with_capacity(f.len());
            for (name, value) in f {
                pairs.push((name.as_str(), value.as_str().ok_or_else(|| corrupt("a field is not a string"))?));
            }
            Some(fields_json(pairs))
        }
        _ => None,
    };
    Ok(StoredRecord {
        record_type: text("t")?,
        key: text("k")?,
        deleted,
        region: text("region")?,
        file: text("file")?,
        version: Version { date, seq: number("vs")?, line: number("vl")? },
        fields_json: if deleted { None } else { fields_json },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_keys_sort_like_versions() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
        let vs = [
            Version { date: d(2022, 7, 30), seq: 9, line: 100 },
            Version { date: d(2022, 7, 30), seq: 10, line: 2 },
            Version { date: d(2022, 7, 30), seq: 10, line: 11 },
            Version { date: d(2022, 7, 31), seq: 1, line: 1 },
            Version { date: d(2022, 7, 31), seq: u64::MAX, line: u64::MAX },
        ];
        for w in vs.windows(2) {
            assert!(version_key(&w[0]) < version_key(&w[1]), "{:?} {:?}", w[0], w[1]);
        }
        for v in &vs {
            assert_eq!(version_of_key(&version_key(v)).unwrap(), *v);
        }
        assert!(version_of_key("20220730.x.1").is_err());
        assert!(record_id("POR", "99") < record_id("POS", "1"));
        assert!(record_id("POS", "10") < record_id("POS", "9"), "text order of keys, like SQLite");
    }
}
