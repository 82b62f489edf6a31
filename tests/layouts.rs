//! The shipped layouts through the binary: the built-in ESR layout is exercised by every
//! other test; here `schemas/esr-rmt-pipe.toml` (pipe-separated, no quoting, no header or
//! trailer, ASG known but not applied, POS keyed by deanery and position ID).

mod common;

use common::Sandbox;

fn pipe_layout() -> Sandbox {
    let layout = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/esr-rmt-pipe.toml");
    Sandbox::with_config(&format!("[profile]\nlayout = {layout:?}\n"))
}

fn deliver(sb: &Sandbox, name: &str, lines: &[&str]) {
    sb.deliver(&(name.to_string(), lines.iter().map(|l| format!("{l}\n")).collect()));
}

#[test]
fn the_pipe_layout_applies_keys_ignores_assignments_and_rejects_the_rest() {
    let sb = pipe_layout();
    deliver(
        &sb,
        "DE_SEV_RMC_20220730_00000001.DAT",
        &[
            "POS|sev|000123|C|42|Staff Nurse|1.5|B5|0042",
            "ASG|9001|123|anything at all",
            "POS|WES|123|C|43|Ward Manager|1|B7|0043",
            "POR|00077|C|Org|Loc",
            "POS|SEV|124|C|44|Nurse, Band 5|12.345|B5|0044",
            "XYZ|1",
        ],
    );
    deliver(&sb, "DE_SEV_RMC_20220731_00000002.DAT", &["POS|SEV|123|D|||||", "ASG|9002"]);
    sb.run_once();
    let status = sb.status_json();
    let counts = &status["counts"];
    assert_eq!(counts["applied_files"], 2, "{status:#}");
    assert_eq!(counts["records_ignored"], 2, "{status:#}");
    assert_eq!(counts["records_rejected"], 2, "{status:#}");
    assert_eq!(counts["records_applied"], 4, "{status:#}");
    let export = sb.export_lines();
    let keys: Vec<(String, String, bool)> = export
        .iter()
        .map(|r| (r["type"].as_str().unwrap().into(), r["key"].as_str().unwrap().into(), r["deleted"] == true))
        .collect();
    assert_eq!(
        keys,
        [
            ("POR".into(), "77".into(), false),
            ("POS".into(), "SEV|123".into(), true),
            ("POS".into(), "WES|123".into(), false)
        ]
    );
    let wes = &export[2];
    assert_eq!(wes["fields"]["whole_time_equivalent"], "1", "{wes:#}");
    assert!(wes["fields"].get("managing_deanery").is_none(), "key fields are the key: {wes:#}");
    let rejects = String::from_utf8(sb.run_ok(&["rejects"]).stdout).unwrap();
    assert!(rejects.contains("field 7 (whole_time_equivalent) more than 2 decimals"), "{rejects}");
    assert!(rejects.contains("unknown record type \"XYZ\""), "{rejects}");
}

#[test]
fn layout_check_tells_what_each_line_becomes_and_exits_3_on_rejects() {
    let sb = Sandbox::new();
    let layout = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/esr-rmt-pipe.toml");
    let good = sb.dir.path().join("good-sample.txt");
    std::fs::write(&good, "POS|SEV|0042|C|1|Nurse|1.5|B5|0001\nASG|1|2\nPOR|7|D||\n").unwrap();
    let out = sb.run(&["layout", "check", "--layout", layout, good.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", common::describe(&out));
    assert!(text.contains("POS SEV|42"), "{text}");
    assert!(text.contains("ASG ignored"), "{text}");
    assert!(text.contains("3 record line(s): 2 applied (POR 1, POS 1), 1 ignored (ASG 1), 0 rejected"), "{text}");
    assert!(text.contains("does not match the name pattern"), "{text}");

    let bad = sb.dir.path().join("DE_SEV_RMC_20220730_00000001.DAT");
    std::fs::write(&bad, "POS|SEV|x|C|1|Nurse|1.5|B5|0001\nPOS|SEV|1|C|1|Nurse|1|B5|1\n").unwrap();
    let out = sb.run(&["layout", "check", "--layout", layout, "--json", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", common::describe(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lines = &v["files"][0]["lines"];
    assert_eq!(lines[0]["outcome"], "rejected");
    assert!(lines[0]["reason"].as_str().unwrap().contains("field 3 (position_id)"), "{v:#}");
    assert!(lines[1]["reason"].as_str().unwrap().contains("vpd_code"), "{v:#}");
    assert_eq!(v["files"][0]["summary"]["rejected"], 2);

    // the built-in layout: a file-level fault is reported too
    let faulty = sb.dir.path().join("DE_SEV_RMC_20220730_00000002.DAT");
    std::fs::write(&faulty, "HDR,RMC,SEV,20220730,00000002\nTRL,1\n").unwrap();
    let out = sb.run(&["layout", "check", faulty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FILE FAULT"), "{}", common::describe(&out));
}

/// `[profile.layouts]`: each file kind read with its own layout in one deployment.
#[test]
fn each_kind_is_read_with_its_own_layout() {
    let layout = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/esr-rmt-pipe.toml");
    let sb = Sandbox::with_config(&format!("[profile.layouts]\nRMC = {layout:?}\n"));
    // the full file in the built-in layout (CSV with header and trailer), then changes piped
    sb.deliver(&common::esr_file("SEV", "RMF", "20220730", 1, &[common::por(77, "C", "full")]));
    deliver(&sb, "DE_SEV_RMC_20220731_00000002.DAT", &["POR|77|C|Org2|Loc2", "ASG|1"]);
    sb.run_once();
    let status = sb.status_json();
    assert_eq!(status["counts"]["applied_files"], 2, "{status:#}");
    assert_eq!(status["counts"]["records_rejected"], 0, "{status:#}");
    assert_eq!(status["counts"]["records_ignored"], 1, "{status:#}");
    let export = sb.export_lines();
    assert_eq!(export.len(), 1);
    assert_eq!(export[0]["fields"]["esr_organisation"], "Org2", "{:#}", export[0]);
    // layout check picks the kind's layout too
    let sample = sb.inbox.join("DE_SEV_RMC_20220731_00000002.DAT");
    let out = sb.run(&["layout", "check", sample.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", common::describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("layout esr-rmt-pipe"), "{}", common::describe(&out));
}
