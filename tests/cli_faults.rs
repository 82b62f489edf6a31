//! File-level faults (quarantine) and line-level faults (rejects) of contract §2,
//! layout details (BOM, CRLF, blank lines, quoting), usage errors and backfill.

mod common;

use common::*;

// ---------------------------------------------------------------------------
// File-level faults: SEQ 1 good, SEQ 2 faulty, SEQ 3 good.

const BAD_DATE: &str = "20220731";

fn bad_name() -> String {
    esr_name("SEV", "RMC", BAD_DATE, 2)
}

/// The one record every faulty file carries; it must never reach the export.
fn faulty_record() -> String {
    por(2, "C", "must never be applied")
}

fn lines(lines: &[&str]) -> Vec<u8> {
    let raw: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
    join_lines(&raw, b"\n")
}

/// Checks that the SEQ 2 file with `content` is quarantined as a whole and holds
/// its stream, while SEQ 1 applies and SEQ 3 is held.
fn assert_file_fault(case: &str, content: &[u8]) {
    let sb = Sandbox::new();
    sb.deliver(&esr_file("SEV", "RMC", "20220730", 1, &[por(1, "C", "one")]));
    let name = bad_name();
    sb.write_file(&name, content);
    sb.deliver(&esr_file("SEV", "RMC", "20220801", 3, &[por(3, "C", "three")]));
    sb.run_once();

    let status = sb.status_json();
    let reason = quarantine_reason(&status, &name)
        .unwrap_or_else(|| panic!("{case}: {name} should be quarantined:\n{status:#}"));
    assert!(!reason.trim().is_empty(), "{case}: empty reason");
    assert_eq!(next_seq(&status, "SEV"), Some(2), "{case}:\n{status:#}");
    assert_eq!(held(&status, "SEV"), vec![3], "{case}:\n{status:#}");
    assert_eq!(count(&status, "applied_files"), 1, "{case}:\n{status:#}");
    let export = sb.export_lines();
    assert!(
        find_record(&export, "POR", "2").is_none(),
        "{case}: nothing of a quarantined file is applied:\n{export:#?}"
    );
    assert!(find_record(&export, "POR", "3").is_none(), "{case}: SEQ 3 stays held:\n{export:#?}");
    record(&export, "POR", "1");
}

#[test]
fn empty_object_is_quarantined() {
    assert_file_fault("empty object", b"");
}

#[test]
fn missing_header_is_quarantined() {
    assert_file_fault("missing header", &lines(&[&faulty_record(), "TRL,1"]));
}

#[test]
fn garbled_header_is_quarantined() {
    for hdr in ["HDR,RMC", "HDR,RMC,SEV,2022731,00000002", "HDR,RMC,SEV,20220731,two", "HDR RMC SEV 20220731 00000002"]
    {
        let content = lines(&[hdr, &faulty_record(), "TRL,1"]);
        assert_file_fault(&format!("garbled header {hdr:?}"), &content);
    }
}

#[test]
fn header_disagreeing_with_the_name_is_quarantined() {
    for (what, hdr) in [
        ("region", "HDR,RMC,WES,20220731,00000002"),
        ("kind", "HDR,RMF,SEV,20220731,00000002"),
        ("date", "HDR,RMC,SEV,20220801,00000002"),
        ("seq", "HDR,RMC,SEV,20220731,00000003"),
    ] {
        let content = lines(&[hdr, &faulty_record(), "TRL,1"]);
        assert_file_fault(&format!("header {what} disagrees"), &content);
    }
}

#[test]
fn header_seq_is_compared_as_a_number() {
    let sb = Sandbox::new();
    let name = esr_name("SEV", "RMC", "20220730", 1157);
    sb.write_file(&name, lines(&["HDR,RMC,SEV,20220730,1157", &por(1, "C", "one"), "TRL,1"]));
    sb.run_once();
    let status = sb.status_json();
    assert!(quarantined_files(&status).is_empty(), "{status:#}");
    assert_eq!(count(&status, "applied_files"), 1, "{status:#}");
    assert_eq!(next_seq(&status, "SEV"), Some(1158), "{status:#}");
}

#[test]
fn missing_trailer_is_quarantined() {
    let hdr = header("RMC", "SEV", BAD_DATE, 2);
    assert_file_fault("missing trailer", &lines(&[&hdr, &faulty_record()]));
}

#[test]
fn wrong_trailer_count_is_quarantined() {
    let hdr = header("RMC", "SEV", BAD_DATE, 2);
    for trl in ["TRL,0", "TRL,2"] {
        let content = lines(&[&hdr, &faulty_record(), trl]);
        assert_file_fault(&format!("trailer {trl} for 1 record"), &content);
    }
}

// ---------------------------------------------------------------------------
// Line-level faults: header, good POR, the bad line (line 3), good POS, trailer.

/// Checks that only line 3 (`bad`) of an otherwise good file is rejected.
fn assert_line_rejected(case: &str, bad: &[u8]) {
    let sb = Sandbox::new();
    let name = esr_name("SEV", "RMC", "20220730", 1);
    let hdr = header("RMC", "SEV", "20220730", 1);
    let good_por = por(1, "C", "good por");
    let good_pos = pos(2, "C", "good pos");
    let content = join_lines(&[hdr.as_bytes(), good_por.as_bytes(), bad, good_pos.as_bytes(), b"TRL,3"], b"\n");
    sb.write_file(&name, content);
    sb.run_once();

    let status = sb.status_json();
    assert!(quarantined_files(&status).is_empty(), "{case}: a line fault does not quarantine the file:\n{status:#}");
    assert_eq!(count(&status, "applied_files"), 1, "{case}:\n{status:#}");
    assert_eq!(count(&status, "records_rejected"), 1, "{case}:\n{status:#}");
    assert_eq!(count(&status, "records_applied"), 2, "{case}:\n{status:#}");
    assert_eq!(next_seq(&status, "SEV"), Some(2), "{case}:\n{status:#}");

    let rejects = sb.rejects_json(&[]);
    assert_eq!(rejects.len(), 1, "{case}:\n{rejects:#?}");
    let reject = &rejects[0];
    assert_eq!(reject["file"], name.as_str(), "{case}: {reject:#}");
    assert_eq!(reject["line"], 3, "{case}: {reject:#}");
    let reason = reject["reason"].as_str().unwrap_or("");
    assert!(!reason.trim().is_empty(), "{case}: no reason: {reject:#}");

    let export = sb.export_lines();
    assert_eq!(export.len(), 2, "{case}: only the good lines:\n{export:#?}");
    assert_eq!(title(record(&export, "POR", "1")), Some("good por"));
    assert_eq!(title(record(&export, "POS", "2")), Some("good pos"));
}

fn bad_por(number: usize, value: &str) -> String {
    with_field(por_fields("9", "C", "bad"), number, value)
}

fn bad_pos(number: usize, value: &str) -> String {
    with_field(pos_fields("9", "C", "bad"), number, value)
}

#[test]
fn unknown_record_type_is_rejected() {
    for line in [bad_por(F_TYPE, "XYZ"), bad_pos(F_TYPE, "PSO")] {
        assert_line_rejected(&format!("unknown type: {line}"), line.as_bytes());
    }
}

#[test]
fn wrong_field_count_is_rejected() {
    let por_ok = por_fields("9", "C", "bad");
    let pos_ok = pos_fields("9", "C", "bad");
    let cases = [
        por_ok[..POR_FIELD_COUNT - 1].join(","),
        format!("{},extra", por_ok.join(",")),
        pos_ok[..POS_FIELD_COUNT - 1].join(","),
        format!("{},extra", pos_ok.join(",")),
    ];
    for line in cases {
        assert_line_rejected(&format!("field count: {line}"), line.as_bytes());
    }
}

#[test]
fn text_longer_than_its_x_width_is_rejected() {
    let cases = [
        bad_por(F_TITLE, &"T".repeat(61)),
        bad_por(POR_MANAGING_DEANERY, "ABCDEFGHIJK"),
        bad_pos(POS_OCCUPATION_CODE, "ABCDEF"),
        bad_pos(POS_GRADE_TRUST, "ST12"),
    ];
    for line in cases {
        assert_line_rejected(&format!("X too long: {line}"), line.as_bytes());
    }
}

#[test]
fn bad_n_field_is_rejected() {
    let cases = [
        bad_por(F_POSITION_ID, "12A4"),
        bad_por(F_POSITION_ID, "1234567890123456"), // 16 digits > N(15)
        bad_pos(F_POSITION_NUMBER, "10x1"),
        bad_pos(F_POSITION_NUMBER, "12345678901"), // 11 digits > N(10)
    ];
    for line in cases {
        assert_line_rejected(&format!("N broken: {line}"), line.as_bytes());
    }
}

#[test]
fn wrong_length_l_field_is_rejected() {
    for vpd in ["123", "12345", "12a4"] {
        let line = bad_por(POR_VPD_CODE, vpd);
        assert_line_rejected(&format!("L(4) vpd_code {vpd:?}"), line.as_bytes());
    }
}

#[test]
fn wrong_length_f_field_is_rejected() {
    // The indicator is F(1).
    for indicator in ["CC", "CD"] {
        let line = bad_por(F_INDICATOR, indicator);
        assert_line_rejected(&format!("F(1) indicator {indicator:?}"), line.as_bytes());
    }
}

#[test]
fn bad_indicator_is_rejected() {
    for indicator in ["X", "U"] {
        let line = bad_pos(F_INDICATOR, indicator);
        assert_line_rejected(&format!("indicator {indicator:?}"), line.as_bytes());
    }
}

#[test]
fn invalid_utf8_line_is_rejected() {
    let mut line = bad_por(F_TITLE, "Caf#").into_bytes();
    let at = line.iter().position(|&b| b == b'#').expect("the placeholder is in the title");
    line[at] = 0xE9; // 'é' in Latin-1: a lone byte that is not UTF-8
    assert_line_rejected("invalid UTF-8", &line);
}

#[test]
fn c_record_missing_a_required_field_is_rejected() {
    for (what, line) in [("position_id", bad_por(F_POSITION_ID, "")), ("indicator", bad_por(F_INDICATOR, ""))] {
        assert_line_rejected(&format!("C without {what}"), line.as_bytes());
    }
}

#[test]
fn d_record_checks_only_type_id_and_indicator() {
    let sb = Sandbox::new();
    // POR 5 is a D whose other fields would be invalid on a C: not checked.
    let mut fields = por_fields("5", "D", &"T".repeat(61));
    fields[POR_VPD_CODE - 1] = "xx".into();
    fields[F_POSITION_NUMBER - 1] = "n/a".into();
    let loose_delete = fields.join(",");
    sb.deliver(&esr_file("SEV", "RMC", "20220730", 1, &[por(1, "C", "soon gone"), por_delete(1), loose_delete]));
    sb.run_once();

    let status = sb.status_json();
    assert_eq!(count(&status, "records_rejected"), 0, "{status:#}");
    assert!(sb.rejects_json(&[]).is_empty());
    let export = sb.export_lines();
    let gone = record(&export, "POR", "1");
    assert_eq!(gone["deleted"], true, "{gone:#}");
    assert_eq!(gone["version"]["line"], 3, "{gone:#}");
    assert_eq!(record(&export, "POR", "5")["deleted"], true);
}

// ---------------------------------------------------------------------------
// Layout details

#[test]
fn leading_bom_is_ignored() {
    let sb = Sandbox::new();
    let (name, content) = esr_file("SEV", "RMC", "20220730", 1, &[por(1, "C", "bom")]);
    sb.write_file(&name, format!("\u{FEFF}{content}"));
    sb.run_once();
    let status = sb.status_json();
    assert!(quarantined_files(&status).is_empty(), "{status:#}");
    let export = sb.export_lines();
    let rec = record(&export, "POR", "1");
    assert_eq!(rec["version"]["line"], 2, "{rec:#}");
}

#[test]
fn crlf_line_ends_are_accepted() {
    let sb = Sandbox::new();
    let (name, content) = esr_file("SEV", "RMC", "20220730", 1, &[por(1, "C", "crlf"), pos(2, "C", "crlf")]);
    sb.write_file(&name, content.replace('\n', "\r\n"));
    sb.run_once();
    let status = sb.status_json();
    assert!(quarantined_files(&status).is_empty(), "{status:#}");
    assert_eq!(count(&status, "records_rejected"), 0, "{status:#}");
    let export = sb.export_lines();
    let rec = record(&export, "POR", "1");
    assert_eq!(rec["fields"]["esr_location"], ESR_LOCATION, "no CR left on the last field: {rec:#}");
    assert_eq!(record(&export, "POS", "2")["fields"]["workplace_org_code"], "RNZ02");
}

#[test]
fn blank_lines_are_ignored_but_counted_for_line_numbers() {
    let sb = Sandbox::new();
    let name = esr_name("SEV", "RMC", "20220730", 1);
    let hdr = header("RMC", "SEV", "20220730", 1);
    let content = lines(&[
        &hdr,                       // 1
        "",                         // 2
        &por(1, "C", "line 3"),     // 3
        "",                         // 4
        &bad_por(F_INDICATOR, "X"), // 5
        &pos(2, "C", "line 6"),     // 6
        "TRL,3",                    // 7
        "",                         // 8
    ]);
    sb.write_file(&name, content);
    sb.run_once();

    let status = sb.status_json();
    assert!(quarantined_files(&status).is_empty(), "{status:#}");
    let export = sb.export_lines();
    assert_eq!(record(&export, "POR", "1")["version"]["line"], 3);
    assert_eq!(record(&export, "POS", "2")["version"]["line"], 6);
    let rejects = sb.rejects_json(&[]);
    assert_eq!(rejects.len(), 1, "{rejects:#?}");
    assert_eq!(rejects[0]["line"], 5, "{rejects:#?}");
}

#[test]
fn rfc4180_quoted_fields_may_hold_commas_and_quotes() {
    let sb = Sandbox::new();
    let comma = with_field(por_fields("1", "C", ""), F_TITLE, "\"Doctor, Senior\"");
    let quotes = with_field(por_fields("2", "C", ""), F_TITLE, "\"Say \"\"hi\"\"\"");
    sb.deliver(&esr_file("SEV", "RMC", "20220730", 1, &[comma, quotes]));
    sb.run_once();

    let status = sb.status_json();
    assert_eq!(count(&status, "records_rejected"), 0, "{status:#}");
    let export = sb.export_lines();
    assert_eq!(title(record(&export, "POR", "1")), Some("Doctor, Senior"));
    assert_eq!(title(record(&export, "POR", "2")), Some("Say \"hi\""));
}

#[test]
fn rejects_can_be_filtered_by_file() {
    let sb = Sandbox::new();
    let first = sb.deliver(&esr_file("SEV", "RMC", "20220730", 1, &[bad_por(F_INDICATOR, "X")]));
    let second = sb.deliver(&esr_file("SEV", "RMC", "20220731", 2, &[por(1, "C", "ok"), bad_pos(F_INDICATOR, "X")]));
    sb.run_once();
    assert_eq!(sb.rejects_json(&[]).len(), 2);
    let only_second = sb.rejects_json(&["--file", &second]);
    assert_eq!(only_second.len(), 1, "{only_second:#?}");
    assert_eq!(only_second[0]["file"], second.as_str());
    assert_eq!(only_second[0]["line"], 3);
    let only_first = sb.rejects_json(&["--file", &first]);
    assert_eq!(only_first.len(), 1, "{only_first:#?}");
    assert_eq!(only_first[0]["line"], 2);
}

// ---------------------------------------------------------------------------
// Command line: usage errors (2), runtime failures (1)

fn assert_one_line_error(case: &str, out: &std::process::Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "{case}\n{}", describe(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{case}: panic\n{}", describe(out));
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{case}: want one line on stderr\n{}", describe(out));
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let sb = Sandbox::new();
    let out = sb.run(&["status", "--no-such-flag"]);
    assert_one_line_error("unknown flag", &out, 2);
    assert!(out.stdout.is_empty(), "{}", describe(&out));
}

#[test]
fn bad_config_is_a_usage_error() {
    for (case, toml, needle) in [
        ("unknown top-level key", "no_such_key = 1\n", "no_such_key"),
        ("unknown key in a section", "[sequence]\nno_such_rule = \"1h\"\n", "no_such_rule"),
        ("bad duration", "poll_interval = \"soon\"\n", "poll_interval"),
    ] {
        let sb = Sandbox::with_config(toml);
        let out = sb.run(&["status", "--json"]);
        assert_one_line_error(case, &out, 2);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{case}: the error should name {needle}\n{}",
            describe(&out)
        );
    }
}

#[test]
fn unusable_store_is_a_runtime_failure() {
    let mut sb = Sandbox::new();
    let blocker = sb.dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"a file where a folder is needed").expect("write blocker");
    sb.store = blocker.join("state.db");
    let out = sb.run(&["run", "--once"]);
    assert_one_line_error("store under a regular file", &out, 1);
}

// ---------------------------------------------------------------------------
// backfill

#[test]
fn backfill_dry_run_lists_only_that_date_and_applies_nothing() {
    let sb = Sandbox::new();
    let before = sb.deliver(&esr_file("SEV", "RMC", "20220729", 1, &[por(1, "C", "a")]));
    let sev = sb.deliver(&esr_file("SEV", "RMC", "20220730", 2, &[por(2, "C", "b")]));
    let after = sb.deliver(&esr_file("SEV", "RMC", "20220731", 3, &[por(3, "C", "c")]));
    let wes = sb.deliver(&esr_file("WES", "RMF", "20220730", 7, &[pos(4, "C", "d")]));

    let out = sb.run_ok(&["backfill", "--from", "2022-07-30", "--to", "2022-07-30", "--dry-run"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    for name in [&sev, &wes] {
        assert!(listed.contains(name.as_str()), "{name} not listed\n{}", describe(&out));
    }
    for name in [&before, &after] {
        assert!(!listed.contains(name.as_str()), "{name} listed\n{}", describe(&out));
    }

    let out = sb.run_ok(&["backfill", "--from", "2022-07-30", "--to", "2022-07-30", "--region", "WES", "--dry-run"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains(wes.as_str()), "{}", describe(&out));
    assert!(!listed.contains(sev.as_str()), "{}", describe(&out));

    let status = sb.status_json();
    assert_eq!(count(&status, "applied_files"), 0, "{status:#}");
    assert_eq!(count(&status, "records_applied"), 0, "{status:#}");
    assert!(sb.export_lines().is_empty(), "a dry run applies nothing");
}

#[test]
fn backfill_applies_under_the_version_rule_but_never_moves_next_seq() {
    let sb = Sandbox::new();
    sb.deliver(&esr_file("SEV", "RMC", "20220730", 1, &[por(1, "C", "v1")]));
    sb.deliver(&esr_file("SEV", "RMC", "20220801", 3, &[por(1, "C", "v3"), por(3, "C", "v3")]));
    sb.run_once();
    let status = sb.status_json();
    assert_eq!(next_seq(&status, "SEV"), Some(2), "{status:#}");

    sb.run_ok(&["backfill", "--from", "2022-08-01", "--to", "2022-08-01"]);
    let status = sb.status_json();
    assert_eq!(next_seq(&status, "SEV"), Some(2), "backfill must not move next_seq:\n{status:#}");
    let export = sb.export_lines();
    assert_eq!(title(record(&export, "POR", "1")), Some("v3"));
    assert_eq!(title(record(&export, "POR", "3")), Some("v3"));

    // The gap fills; SEQ 2's older line for POR 1 loses to the backfilled SEQ 3.
    sb.deliver(&esr_file("SEV", "RMC", "20220731", 2, &[por(1, "C", "v2"), por(2, "C", "v2")]));
    sb.run_once();
    let status = sb.status_json();
    assert_eq!(next_seq(&status, "SEV"), Some(4), "{status:#}");
    let export = sb.export_lines();
    assert_eq!(title(record(&export, "POR", "1")), Some("v3"));
    assert_eq!(title(record(&export, "POR", "2")), Some("v2"));
}
