//! `audit` through the command line: exit 0 on agreement, exit 3 with a finding per
//! discrepancy (never seen, held too long, object missing, counts that do not add up),
//! each naming the file and the fix.

mod common;

use common::{Sandbox, esr_file, por};

fn audit(s: &Sandbox, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["audit", "--json"];
    args.extend_from_slice(extra);
    let out = s.run(&args);
    let code = out.status.code().expect("an exit code");
    (code, common::parse_json(&out, "audit --json"))
}

fn kinds(doc: &serde_json::Value) -> Vec<(String, String)> {
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["kind"].as_str().unwrap().to_string(), f["file"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn audit_finds_each_discrepancy_and_exits_3() {
    let s = Sandbox::new();
    let one = s.deliver(&esr_file("SEV", "RMC", "20220801", 1, &[por(1, "C", "Nurse"), por(2, "C", "Porter")]));
    s.run_once();
    let (code, doc) = audit(&s, &[]);
    assert_eq!(code, 0, "a processed inbox has no findings: {doc}");
    assert_eq!(doc["findings"], serde_json::json!([]));
    assert_eq!(doc["checked"]["objects"], 1);

    // held behind a gap, longer than the threshold
    let three = s.deliver(&esr_file("SEV", "RMC", "20220803", 3, &[por(3, "C", "Nurse")]));
    s.run_once();
    // uploaded, never seen by a pass
    let four = s.deliver(&esr_file("WES", "RMC", "20220804", 1, &[por(4, "C", "Nurse")]));
    let (code, doc) = audit(&s, &["--stuck-after", "0s"]);
    assert_eq!(code, 3, "{doc}");
    assert_eq!(kinds(&doc), vec![("never_seen".into(), four.clone()), ("stuck_pending".into(), three.clone())]);
    let held = &doc["findings"][1];
    assert!(held["fix"].as_str().unwrap().contains("sequence skip"), "{held}");
    assert_eq!((held["region"].as_str(), held["seq"].as_u64()), (Some("SEV"), Some(3)));

    // --from/--to narrow the audit to name dates
    let (code, doc) = audit(&s, &["--stuck-after", "0s", "--from", "2022-08-04", "--to", "2022-08-04"]);
    assert_eq!((code, kinds(&doc)), (3, vec![("never_seen".into(), four.clone())]));

    // the held file's object disappears; the applied file's counts are tampered with
    std::fs::remove_file(s.inbox.join(&three)).unwrap();
    std::fs::remove_file(s.inbox.join(&four)).unwrap();
    let db = rusqlite::Connection::open(&s.store).unwrap();
    db.execute("UPDATE objects SET records_applied = 1 WHERE name = ?1", [&one]).unwrap();
    drop(db);
    let (code, doc) = audit(&s, &[]);
    assert_eq!(code, 3, "{doc}");
    assert_eq!(kinds(&doc), vec![("counts_mismatch".into(), one.clone()), ("object_missing".into(), three)]);
    assert!(doc["findings"][0]["detail"].as_str().unwrap().contains("2 record lines parsed, but 1 accounted for"));

    // text output names the same, with the fix
    let out = s.run(&["audit"]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("counts_mismatch") && text.contains(&one) && text.contains("fix: "), "{text}");
}

#[test]
fn audit_rejects_an_inverted_range() {
    let s = Sandbox::new();
    let out = s.run(&["audit", "--from", "2022-08-05", "--to", "2022-08-01"]);
    assert_eq!(out.status.code(), Some(2), "{}", common::describe(&out));
}
