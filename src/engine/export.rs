//! The export line format (contract §5), shared by every store so exports compare byte
//! for byte.

use crate::ports::store::StoredRecord;

/// One JSON object per record identity; `fields` is left out for a tombstone.
pub fn export_line(r: &StoredRecord) -> String {
    let s = |v: &str| serde_json::to_string(v).unwrap_or_default();
    let mut out = format!(
        "{{\"type\":{},\"key\":{},\"deleted\":{},\"region\":{},\"file\":{},\"version\":{{\"date\":\"{}\",\"seq\":{},\"line\":{}}}",
        s(&r.record_type),
        s(&r.key),
        r.deleted,
        s(&r.region),
        s(&r.file),
        r.version.date.format("%Y-%m-%d"),
        r.version.seq,
        r.version.line
    );
    if let (false, Some(fields)) = (r.deleted, &r.fields_json) {
        out.push_str(",\"fields\":");
        out.push_str(fields);
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::version::Version;

    #[test]
    fn renders_the_contract_shape() {
        let mut r = StoredRecord {
            record_type: "POS".into(),
            key: "123456".into(),
            deleted: false,
            region: "SEV".into(),
            file: "DE_SEV_RMC_20220730_00001157.DAT".into(),
            version: Version { date: chrono::NaiveDate::from_ymd_opt(2022, 7, 30).unwrap(), seq: 1157, line: 12 },
            fields_json: Some(r#"{"position_title":"Nurse, \"B5\""}"#.into()),
        };
        let v: serde_json::Value = serde_json::from_str(&export_line(&r)).unwrap();
        assert_eq!(v["version"]["date"], "2022-07-30");
        assert_eq!(v["fields"]["position_title"], "Nurse, \"B5\"");
        r.deleted = true;
        let v: serde_json::Value = serde_json::from_str(&export_line(&r)).unwrap();
        assert!(v.get("fields").is_none());
    }
}
