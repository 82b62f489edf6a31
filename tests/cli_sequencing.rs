//! Sequencing (contract §4), versions and deletes (§3), names (§1) and the export
//! format (§5), driven through the built binary's command line.

mod common;

use std::thread::sleep;
use std::time::Duration;

use common::*;
use serde_json::json;

/// Slightly more than the 1 s gap/auto-skip thresholds used below.
const PAST_ONE_SECOND: Duration = Duration::from_millis(1500);

#[test]
fn files_in_order_apply_and_next_seq_advances() {
    let sb = Sandbox::new();
    // RMC and RMF files of a region share its sequence.
    sb.deliver(&esr_file("SEV", "RMF", "20220730", 1157, &[por(1, "C", "first"), por(2, "C", "two")]));
    let second = sb.deliver(&esr_file("SEV", "RMC", "20220731", 1158, &[por(1, "C", "second")]));
    sb.deliver(&esr_file("SEV", "RMC", "20220801", 1159, &[pos(3, "C", "three")]));
    sb.run_once();

    let status = sb.status_json();
    assert_eq!(next_seq(&status, "SEV"), Some(1160), "{status:#}");
    assert!(held(&status, "SEV").is_empty(), "{status:#}");
    assert!(!gap_alert(&status, "SEV"), "{status:#}");
    assert_eq!(count(&status, "applied_files"), 3, "{status:#}");
    assert_eq!(count(&status, "records_applied"), 4, "{status:#}");
    assert_eq!(count(&status, "records_rejected"), 0, "{status:#}");
    assert!(quarantined_files(&status).is_empty(), "{status:#}");

    let export = sb.export_lines();
    assert_eq!(export.len(), 3, "one object per identity:\n{export:#?}");
    let rec = record(&export, "POR", "1");
    assert_eq!(title(rec), Some("second"), "later file wins: {rec:#}");
    assert_eq!(rec["file"], second.as_str(), "{rec:#}");
    assert_eq!(rec["version"]["seq"], 1158, "{rec:#}");
}

#[test]
fn newer_seq_arriving_first_is_held_until_the_missing_one_arrives() {
    let sb = Sandbox::new();
    sb.deliver(&esr_file("SEV", "RMC", "20220730", 10, &[por(1, "C", "from 10")]));
    let f12 = sb.deliver(&esr_file("SEV", "RMC", "20220801", 12, &[por(1, "C", "from 12"), por(2, "C", "only in 12")]));
    sb.run_once();

    let status = sb.status_json();
    assert_eq!(next_seq(&status, "SEV"), Some(11), "{status:#}");
    assert_eq!(held(&status, "SEV"), vec![12], "{status:#}");
    assert!(!gap_alert(&status, "SEV"), "default alert is 26h:\n{status:#}");
    assert!(
        stream(&status, "SEV")["waiting_since"].is_string(),
        "a stream waiting on a gap shows waiting_since:\n{status:#}"
    );
    let export = sb.export_lines();
    assert_eq!(title(record(&export, "POR", "1")), Some("from 10"));
    assert!(find_record(&export, "POR", "2").is_none(), "a held file must not be applied:\n{export:#?}");

    sb.deliver(&esr_file("SEV", "RMC", "20220731", 11, &[por(1, "C", "from 11"), por(3, "C", "only in 11")]));
    sb.run_once();

    let status = sb.status_json();
    assert_eq!(next_seq(&status, "SEV"), Some(13), "{status:#}");
    assert!(held(&status, "SEV").is_empty(), "{status:#}");
    assert!(!gap_alert(&status, "SEV"), "{status:#}");
    assert_eq!(count(&status, "applied_files"), 3, "{status:#}");
    let export = sb.export_lines();
    let rec = record(&export, "POR", "1");
    assert_eq!(title(rec), Some("from 12"), "{rec:#}");
    assert_eq!(rec["file"], f12.as_str(), "{rec:#}");
    record(&export, "POR", "2");
    record(&export, "POR", "3");
}

#[test]
fn first_pass_baseline_is_the_lowest_seq_per_region() {
    let sb = Sandbox::new();
    sb.deliver(&esr_file("SEV", "RMC", "20220731", 1158, &[por(1, "C", "from 1158")]));
    sb.deliver(&esr_file("SEV", "RMC", "20220802", 1160, &[por(6, "C", "from 1160")]));
    sb.deliver(&esr_file("WES", "RMC", "20220730", 42, &[pos(1, "C", "wes")]));
    sb.run_once();

    let status = sb.status_json();
    assert_eq!(next_seq(&status, "SEV"), Some(1159), "{status:#}");
    assert_eq!(held(&status, "SEV"), vec![1160], "{status:#}");
    assert_eq!(next_seq(&status, "WES"), Some(43), "{status:#}");
    assert!(held(&status, "WES").is_empty(), "{status:#}");
    assert_eq!(count(&status, "applied_files"), 2, "{status:#}");

    // Below the baseline and never applied: a late file, applied under the version
    // rule without moving next_seq backwards.
    sb.deliver(&esr_file("SEV", "RMC", "20220730", 1157, &[por(1, "C", "late"), por(5, "C", "only in late")]));
    sb.run_once();

    let status = sb.status_json();
    assert_eq!(next_seq(&status, "SEV"), Some(1159), "{status:#}");
    assert_eq!(held(&status, "SEV"), vec![1160], "{status:#}");
    assert_eq!(count(&status, "records_stale"), 1, "{status:#}");
    let export = sb.export_lines();
    assert_eq!(title(record(&export, "POR", "1")), Some("from 1158"));
    assert_eq!(title(record(&export, "POR", "5")), Some("only in late"));
    assert!(find_record(&export, "POR", "6").is_none(), "1160 is held");
}

#[test]
fn configured_start_is_the_baseline_and_older_files_are_late() {
    let sb = Sandbox::with_config("[sequence.start]\nSEV = 1157\n");
    // Pass 1: 1156 is below the configured start (late), 1158 waits for 1157.
    sb.deliver(&esr_file("SEV", "RMC", "20220729", 1156, &[por(2, "C", "from 1156")]));
    sb.deliver(&esr_file("SEV", "RMC", "20220731", 1158, &[por(1, "C", "from 1158")]));
    sb.run_once();

    let status = sb.status_json();
    assert_eq!(next_seq(&status, "SEV"), Some(1157), "configured start, not the lowest SEQ found:\n{status:#}");
    assert_eq!(held(&status, "SEV"), vec![1158], "{status:#}");
    let export = sb.export_lines();
    assert_eq!(title(record(&export, "POR", "2")), Some("from 1156"));
    assert!(find_record(&export, "POR", "1").is_none(), "{export:#?}");

    // Pass 2: 1157 arrives; 1157 and 1158 apply in order.
    sb.deliver(&esr_file("SEV", "RMC", "20220730", 1157, &[por(1, "C", "from 1157"), por(3, "C", "from 1157")]));
    sb.run_once();
    let status = sb.status_json();
    assert_eq!(next_seq(&status, "SEV"), Some(1159), "{status:#}");
    assert!(held(&status, "SEV").is_empty(), "{status:#}");

    // Pass 3: another late file cannot overwrite newer data, only fill in.
    let stale_before = count(&status, "records_stale");
    sb.deliver(&esr_file("SEV", "RMC", "20220728", 1155, &[por(1, "C", "from 1155"), por(4, "C", "from 1155")]));
    sb.run_once();
    let status = sb.status_json();
    assert_eq!(next_seq(&status, "SEV"), Some(1159), "{status:#}");
    assert_eq!(count(&status, "records_stale"), stale_before + 1, "{status:#}");
    let export = sb.export_lines();
    assert_eq!(title(record(&export, "POR", "1")), Some("from 1158"));
    assert_eq!(title(record(&export, "POR", "2")), Some("from 1156"));
    assert_eq!(title(record(&export, "POR", "3")), Some("from 1157"));
    assert_eq!(title(record(&export, "POR", "4")), Some("from 1155"));
}

#[test]
fn a_gap_raises_gap_alert_after_the_configured_time_and_is_never_skipped() {
    let sb = Sandbox::with_config("[sequence]\ngap_alert_after = \"1s\"\n");
    sb.deliver(&esr_file("SEV", "RMC", "20220730", 1, &[por(1, "C", "one")]));
    sb.deliver(&esr_file("SEV", "RMC", "20220801", 3, &[por(3, "C", "three")]));
    sb.run_once();
    sleep(PAST_ONE_SECOND);
    sb.run_once();

    let status = sb.status_json();
    assert!(gap_alert(&status, "SEV"), "{status:#}");
    assert_eq!(next_seq(&status, "SEV"), Some(2), "gaps are never skipped:\n{status:#}");
    assert_eq!(held(&status, "SEV"), vec![3], "{status:#}");
    let since = stream(&status, "SEV")["waiting_since"]
        .as_str()
        .unwrap_or_else(|| panic!("waiting_since must be a string:\n{status:#}"));
    let since = chrono::DateTime::parse_from_rfc3339(since)
        .unwrap_or_else(|e| panic!("waiting_since {since:?} is not RFC 3339: {e}"));
    assert!(since.timestamp() <= chrono::Utc::now().timestamp() + 5, "waiting_since lies in the future: {since}");
    assert!(find_record(&sb.export_lines(), "POR", "3").is_none());
}

#[test]
fn operator_skip_releases_held_files_and_the_skipped_seq_arrives_late() {
    let sb = Sandbox::new();
    sb.deliver(&esr_file("SEV", "RMC", "20220730", 1, &[por(1, "C", "v1")]));
    sb.deliver(&esr_file("SEV", "RMC", "20220801", 3, &[por(1, "C", "v3"), por(3, "C", "v3")]));
    sb.deliver(&esr_file("SEV", "RMC", "20220802", 4, &[por(4, "C", "v4")]));
    sb.run_once();
    let status = sb.status_json();
    assert_eq!(next_seq(&status, "SEV"), Some(2), "{status:#}");
    assert_eq!(held(&status, "SEV"), vec![3, 4], "{status:#}");

    sb.skip("SEV", 2, "never sent by ESR");
    sb.run_once();
    let status = sb.status_json();
    assert_eq!(next_seq(&status, "SEV"), Some(5), "{status:#}");
    assert!(held(&status, "SEV").is_empty(), "{status:#}");
    assert_eq!(title(record(&sb.export_lines(), "POR", "1")), Some("v3"));

    // The skipped SEQ turns up after all: late, version rule, next_seq stays.
    sb.deliver(&esr_file("SEV", "RMC", "20220731", 2, &[por(1, "C", "v2"), por(2, "C", "v2")]));
    sb.run_once();
    let status = sb.status_json();
    assert_eq!(next_seq(&status, "SEV"), Some(5), "{status:#}");
    assert_eq!(count(&status, "applied_files"), 4, "{status:#}");
    assert_eq!(count(&status, "records_stale"), 1, "{status:#}");
    let export = sb.export_lines();
    assert_eq!(title(record(&export, "POR", "1")), Some("v3"), "{export:#?}");
    assert_eq!(title(record(&export, "POR", "2")), Some("v2"), "{export:#?}");
}

#[test]
fn auto_skip_moves_past_a_gap() {
    let sb = Sandbox::with_config("[sequence]\nauto_skip_after = \"1s\"\n");
    sb.deliver(&esr_file("SEV", "RMC", "20220730", 1, &[por(1, "C", "one")]));
    sb.deliver(&esr_file("SEV", "RMC", "20220801", 3, &[por(3, "C", "three")]));
    sb.run_once();
    sleep(PAST_ONE_SECOND);
    sb.run_once();

    let status = sb.status_json();
    assert_eq!(next_seq(&status, "SEV"), Some(4), "{status:#}");
    assert!(held(&status, "SEV").is_empty(), "{status:#}");
    assert_eq!(title(record(&sb.export_lines(), "POR", "3")), Some("three"));
}

#[test]
fn same_name_same_bytes_again_is_a_duplicate() {
    let sb = Sandbox::new();
    let name = sb.deliver(&esr_file("SEV", "RMC", "20220730", 1, &[por(1, "C", "one"), pos(2, "C", "two")]));
    sb.run_once();
    let export_before = sb.export_text();

    // Nothing new uploaded: a second pass is not a duplicate.
    sb.run_once();
    let status = sb.status_json();
    assert_eq!(count(&status, "duplicate_files"), 0, "{status:#}");

    sb.touch_newer(&name);
    sb.run_once();
    let status = sb.status_json();
    assert_eq!(count(&status, "duplicate_files"), 1, "{status:#}");
    assert_eq!(count(&status, "applied_files"), 1, "{status:#}");
    assert_eq!(count(&status, "records_applied"), 2, "{status:#}");
    assert!(quarantined_files(&status).is_empty(), "{status:#}");
    assert_eq!(next_seq(&status, "SEV"), Some(2), "{status:#}");
    assert_eq!(sb.export_text(), export_before, "a duplicate changes nothing");
}

#[test]
fn same_name_different_bytes_after_apply_is_a_conflict() {
    let sb = Sandbox::new();
    let name = sb.deliver(&esr_file("SEV", "RMC", "20220730", 1, &[por(1, "C", "original")]));
    sb.run_once();
    let export_before = sb.export_text();

    sb.deliver(&esr_file("SEV", "RMC", "20220730", 1, &[por(1, "C", "rewritten"), por(2, "C", "new")]));
    sb.run_once();

    let status = sb.status_json();
    let reason =
        quarantine_reason(&status, &name).unwrap_or_else(|| panic!("{name} should be quarantined:\n{status:#}"));
    assert!(reason.starts_with("conflict:"), "reason: {reason:?}");
    assert_eq!(count(&status, "applied_files"), 1, "{status:#}");
    assert_eq!(sb.export_text(), export_before, "a conflict applies nothing");
}

/// SEQ 1 good, SEQ 2 with a wrong trailer count, SEQ 3 good.
fn deliver_with_quarantined_middle(sb: &Sandbox) -> String {
    sb.deliver(&esr_file("SEV", "RMC", "20220730", 1, &[por(1, "C", "one")]));
    let (name, content) = esr_file("SEV", "RMC", "20220731", 2, &[por(2, "C", "two")]);
    sb.write_file(&name, content.replace("TRL,1", "TRL,5"));
    sb.deliver(&esr_file("SEV", "RMC", "20220801", 3, &[por(3, "C", "three")]));
    name
}

#[test]
fn quarantined_file_holds_its_stream_until_a_corrected_upload() {
    let sb = Sandbox::new();
    let bad = deliver_with_quarantined_middle(&sb);
    sb.run_once();
    let status = sb.status_json();
    assert!(quarantine_reason(&status, &bad).is_some(), "{status:#}");
    assert_eq!(next_seq(&status, "SEV"), Some(2), "{status:#}");
    assert_eq!(held(&status, "SEV"), vec![3], "{status:#}");

    // A corrected object under the same name is validated afresh.
    sb.deliver(&esr_file("SEV", "RMC", "20220731", 2, &[por(2, "C", "two")]));
    sb.run_once();
    let status = sb.status_json();
    assert_eq!(next_seq(&status, "SEV"), Some(4), "{status:#}");
    assert!(held(&status, "SEV").is_empty(), "{status:#}");
    assert!(quarantine_reason(&status, &bad).is_none(), "the corrected file is no longer quarantined:\n{status:#}");
    assert_eq!(count(&status, "applied_files"), 3, "{status:#}");
    let export = sb.export_lines();
    record(&export, "POR", "2");
    record(&export, "POR", "3");
}

#[test]
fn quarantined_file_released_by_operator_skip() {
    let sb = Sandbox::new();
    deliver_with_quarantined_middle(&sb);
    sb.run_once();
    sb.skip("SEV", 2, "bad trailer, ESR will not resend");
    sb.run_once();

    let status = sb.status_json();
    assert_eq!(next_seq(&status, "SEV"), Some(4), "{status:#}");
    assert!(held(&status, "SEV").is_empty(), "{status:#}");
    let export = sb.export_lines();
    record(&export, "POR", "3");
    assert!(find_record(&export, "POR", "2").is_none(), "{export:#?}");
}

#[test]
fn tombstone_survives_an_older_create_arriving_late() {
    let sb = Sandbox::new();
    sb.deliver(&esr_file("SEV", "RMC", "20220731", 2, &[por(7, "C", "alive"), pos(8, "C", "other")]));
    let deleter = sb.deliver(&esr_file("SEV", "RMC", "20220801", 3, &[por_delete(7)]));
    sb.run_once();

    let check_tombstone = |export: &[serde_json::Value]| {
        let rec = record(export, "POR", "7");
        assert_eq!(rec["deleted"], true, "{rec:#}");
        assert!(rec.get("fields").is_none(), "no fields on a tombstone: {rec:#}");
        assert_eq!(rec["file"], deleter.as_str(), "{rec:#}");
        assert_eq!(rec["version"], json!({"date": "2022-08-01", "seq": 3, "line": 2}), "{rec:#}");
    };
    check_tombstone(&sb.export_lines());

    // SEQ 1 is below the baseline (2): late, and its C is older than the D.
    sb.deliver(&esr_file("SEV", "RMC", "20220730", 1, &[por(7, "C", "resurrected?")]));
    sb.run_once();
    let status = sb.status_json();
    assert_eq!(count(&status, "records_stale"), 1, "{status:#}");
    assert_eq!(next_seq(&status, "SEV"), Some(4), "{status:#}");
    let export = sb.export_lines();
    check_tombstone(&export);
    assert_eq!(record(&export, "POS", "8")["deleted"], false);
}

#[test]
fn equal_version_seen_again_is_counted_not_applied() {
    let sb = Sandbox::new();
    sb.deliver(&esr_file("SEV", "RMC", "20220730", 1, &[por(1, "C", "one"), pos(2, "C", "two")]));
    sb.run_once();
    let export_before = sb.export_text();

    // Backfill reprocesses the already applied file: every line has an equal version.
    sb.run_ok(&["backfill", "--from", "2022-07-30", "--to", "2022-07-30"]);
    let status = sb.status_json();
    assert_eq!(count(&status, "records_unchanged"), 2, "{status:#}");
    assert_eq!(count(&status, "records_applied"), 2, "{status:#}");
    assert_eq!(count(&status, "records_stale"), 0, "{status:#}");
    assert_eq!(sb.export_text(), export_before);
}

#[test]
fn export_object_format() {
    let sb = Sandbox::new();
    let name = sb.deliver(&esr_file(
        "SEV",
        "RMC",
        "20220730",
        1157,
        &[pos(123456, "C", "Specialty Registrar"), por(42, "C", "Consultant")],
    ));
    sb.run_once();
    let export = sb.export_lines();
    assert_eq!(export.len(), 2, "{export:#?}");

    let pos_rec = record(&export, "POS", "123456");
    assert_eq!(pos_rec["type"], "POS");
    assert_eq!(pos_rec["key"], "123456", "key is a string: {pos_rec:#}");
    assert_eq!(pos_rec["deleted"], false, "{pos_rec:#}");
    assert_eq!(pos_rec["region"], "SEV", "{pos_rec:#}");
    assert_eq!(pos_rec["file"], name.as_str(), "{pos_rec:#}");
    assert_eq!(pos_rec["version"], json!({"date": "2022-07-30", "seq": 1157, "line": 2}), "{pos_rec:#}");
    let fields = &pos_rec["fields"];
    assert_eq!(fields["position_number"], "2002", "{pos_rec:#}");
    assert_eq!(fields["position_title"], "Specialty Registrar", "{pos_rec:#}");
    assert_eq!(fields["occupation_code"], "MRA1", "{pos_rec:#}");
    assert_eq!(fields["grade_trust"], "ST1", "{pos_rec:#}");
    assert_eq!(fields["workplace_org_code"], "RNZ02", "{pos_rec:#}");

    let por_rec = record(&export, "POR", "42");
    assert_eq!(por_rec["version"]["line"], 3, "{por_rec:#}");
    let fields = &por_rec["fields"];
    assert_eq!(fields["position_title"], "Consultant", "{por_rec:#}");
    assert_eq!(fields["vpd_code"], "1234", "{por_rec:#}");
    assert_eq!(fields["esr_location"], ESR_LOCATION, "{por_rec:#}");
}

#[test]
fn export_is_sorted_by_type_then_key_as_strings() {
    let sb = Sandbox::new();
    sb.deliver(&esr_file(
        "SEV",
        "RMC",
        "20220730",
        1,
        &[
            pos(4, "C", "a"),
            por(9, "C", "b"),
            por(100, "C", "c"),
            pos(30, "C", "d"),
            por(2, "C", "e"),
            por(10, "C", "f"),
            pos(1, "C", "g"),
            por_delete(2),
        ],
    ));
    sb.run_once();
    let order: Vec<(String, String)> = sb
        .export_lines()
        .iter()
        .map(|rec| {
            let field =
                |name: &str| rec[name].as_str().unwrap_or_else(|| panic!("{name} is not a string: {rec}")).to_string();
            (field("type"), field("key"))
        })
        .collect();
    let expected: Vec<(String, String)> =
        [("POR", "10"), ("POR", "100"), ("POR", "2"), ("POR", "9"), ("POS", "1"), ("POS", "30"), ("POS", "4")]
            .iter()
            .map(|(t, k)| (t.to_string(), k.to_string()))
            .collect();
    assert_eq!(order, expected, "tombstones included, sorted as strings");
}

#[test]
fn export_output_option_writes_the_same_lines_to_a_file() {
    let sb = Sandbox::new();
    sb.deliver(&esr_file("SEV", "RMC", "20220730", 1, &[por(1, "C", "one"), pos(2, "C", "two")]));
    sb.run_once();
    let path = sb.dir.path().join("export.jsonl");
    let path_arg = path.to_str().expect("temp paths are UTF-8");
    sb.run_ok(&["export", "--output", path_arg]);
    let written = std::fs::read(&path).expect("export --output wrote the file");
    assert_eq!(String::from_utf8_lossy(&written), sb.export_text());
    assert_eq!(parse_json_lines(&written, "export file").len(), 2);
}

#[test]
fn bad_names_are_quarantined_and_dot_files_ignored() {
    let sb = Sandbox::new();
    let good = sb.deliver(&esr_file("SEV", "RMC", "20220730", 1, &[por(1, "C", "ok")]));
    let (_, content) = esr_file("SEV", "RMC", "20220730", 2, &[por(2, "C", "x")]);
    let bad_names = [
        "DE_SEV_RMC_20220230_00000002.DAT", // no 30 February
        "DE_SEV_RMC_20220730_0000002.DAT",  // 7-digit SEQ
        "DE_SEV_RMC_20220730_00000000.DAT", // SEQ must be > 0
        "DE_Sev_RMC_20220730_00000002.DAT", // region not upper-case
        "DE_SEV_RMX_20220730_00000002.DAT", // unknown kind
        "DE_SEV_RMC_20220730_00000002.TXT",
        "notes.txt",
    ];
    for name in bad_names {
        sb.write_file(name, &content);
    }
    sb.write_file(".DE_SEV_RMC_20220730_00000002.DAT", &content);
    sb.write_file(".upload-in-progress", &content);

    for pass in 1..=2 {
        sb.run_once();
        let status = sb.status_json();
        for name in bad_names {
            let reason = quarantine_reason(&status, name)
                .unwrap_or_else(|| panic!("pass {pass}: {name} should be quarantined:\n{status:#}"));
            assert!(reason.starts_with("bad name:"), "{name}: {reason:?}");
        }
        assert_eq!(
            quarantined_files(&status).len(),
            bad_names.len(),
            "pass {pass}: dot files are ignored, nothing listed twice:\n{status:#}"
        );
        assert!(quarantine_reason(&status, &good).is_none(), "{status:#}");
        assert_eq!(count(&status, "applied_files"), 1, "{status:#}");
    }
    assert_eq!(sb.export_lines().len(), 1);
}

#[test]
fn skip_of_an_unknown_region_is_refused_and_recorded_skips_show_in_status() {
    let sb = Sandbox::new();
    sb.deliver(&esr_file("SEV", "RMC", "20220730", 1, &[por(1, "C", "one")]));
    sb.deliver(&esr_file("SEV", "RMC", "20220801", 3, &[por(3, "C", "three")]));
    sb.run_once();

    let typo = sb.run(&["sequence", "skip", "--region", "SVE", "--seq", "2", "--reason", "typo"]);
    assert_eq!(typo.status.code(), Some(2), "{}", describe(&typo));
    assert!(String::from_utf8_lossy(&typo.stderr).contains("unknown region"), "{}", describe(&typo));

    sb.skip("SEV", 2, "lost upstream");
    let status = sb.status_json();
    let actions = status["recent_actions"].as_array().expect("recent_actions");
    assert_eq!(actions.len(), 1, "{status:#}");
    assert_eq!((actions[0]["region"].as_str(), actions[0]["seq"].as_u64()), (Some("SEV"), Some(2)));
    assert_eq!(actions[0]["detail"], "lost upstream");
}

/// `run --once` leaves the embedded store tidy: its WAL is checkpointed and truncated at
/// the end, so the next process (a `status`, the next run) opens it without reading
/// through everything the run wrote.
#[test]
fn run_once_leaves_no_write_ahead_log_behind() {
    let sb = Sandbox::new();
    for seq in 1..=20u32 {
        let rows: Vec<_> = (0..50).map(|k| por(k, "C", "a title long enough to fill some pages")).collect();
        sb.deliver(&esr_file("SEV", "RMC", &format!("202207{:02}", seq + 1), seq, &rows));
    }
    sb.run_once();
    let wal = sb.store.with_extension("db-wal");
    let left = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(left, 0, "{} holds {left} bytes after the run", wal.display());
    assert_eq!(count(&sb.status_json(), "applied_files"), 20);
}

/// A backlog goes into the store several files at a time (`engine::group`): a file with a
/// file-level fault in the middle of one is quarantined, the files before it are applied
/// with exactly the counts they get one by one, and the files after it wait.
#[test]
fn a_faulty_file_inside_a_backlog_stops_it_there_and_the_files_before_it_count_as_alone() {
    let sb = Sandbox::new();
    let lines = |day: u32| [por(1, "C", &format!("day {day}")), por(2, "C", "same"), pos(3, "C", &format!("d{day}"))];
    for (day, seq) in (1..=6).map(|d| (d, 20 + d)) {
        let (name, mut text) = esr_file("SEV", "RMC", &format!("202208{day:02}"), seq, &lines(day));
        if day == 4 {
            text = text.replace("TRL,3", "TRL,4");
        }
        sb.write_file(&name, text);
    }
    sb.run_once();
    let status = sb.status_json();
    assert_eq!(next_seq(&status, "SEV"), Some(24), "{status:#}");
    assert_eq!(quarantined_files(&status), vec!["DE_SEV_RMC_20220804_00000024.DAT".to_string()], "{status:#}");
    assert_eq!(held(&status, "SEV"), vec![25, 26], "{status:#}");
    assert_eq!(count(&status, "applied_files"), 3, "{status:#}");
    // every line of the three files is newer than what came before it
    assert_eq!(count(&status, "records_applied"), 9, "{status:#}");
    assert_eq!((count(&status, "records_stale"), count(&status, "records_unchanged")), (0, 0), "{status:#}");
    let export = sb.export_lines();
    assert_eq!(title(record(&export, "POR", "1")), Some("day 3"), "{export:#?}");
    assert_eq!(record(&export, "POS", "3")["file"], "DE_SEV_RMC_20220803_00000023.DAT");
    // the file sent again without its fault: the rest follows
    let (name, text) = esr_file("SEV", "RMC", "20220804", 24, &lines(4));
    sb.write_file(&name, text);
    sb.run_once();
    let status = sb.status_json();
    assert_eq!(next_seq(&status, "SEV"), Some(27), "{status:#}");
    assert_eq!(count(&status, "applied_files"), 6, "{status:#}");
    assert_eq!(count(&status, "records_applied"), 18, "{status:#}");
    assert_eq!(title(record(&sb.export_lines(), "POR", "1")), Some("day 6"));
}
