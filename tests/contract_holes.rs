//! Holes found in the contract's promises by adversarial use, each pinned by a test that
//! failed before its fix. Embedded mode, driven through the binary.

mod common;

use common::*;

/// A held file skipped by the operator before it was ever read, then delivered again with
/// the same bytes (a sync tool re-copying it, a `touch`): it stays skipped and counts as a
/// duplicate, never applied as a late file.
#[test]
fn a_skipped_file_delivered_again_unchanged_stays_skipped() {
    let sb = Sandbox::new();
    sb.deliver(&esr_file("SEV", "RMC", "20220730", 1, &[por(1, "C", "one")]));
    let third = sb.deliver(&esr_file("SEV", "RMC", "20220801", 3, &[por(3, "C", "from the skipped file")]));
    sb.run_once();
    assert_eq!(held(&sb.status_json(), "SEV"), vec![3]);

    sb.skip("SEV", 3, "the partner withdrew it");
    sb.skip("SEV", 2, "never sent");
    sb.run_once();
    sb.touch_newer(&third);
    sb.run_once();

    let status = sb.status_json();
    assert_eq!(count(&status, "duplicate_files"), 1, "{status:#}");
    assert_eq!(count(&status, "applied_files"), 1, "{status:#}");
    assert_eq!(next_seq(&status, "SEV"), Some(4), "{status:#}");
    assert!(find_record(&sb.export_lines(), "POR", "3").is_none(), "the skipped file was applied");
}

/// A skipped name delivered again with new content is a late file: applied under the
/// version rule.
#[test]
fn a_skipped_file_delivered_again_changed_is_a_late_file() {
    let sb = Sandbox::new();
    sb.deliver(&esr_file("SEV", "RMC", "20220730", 1, &[por(1, "C", "one")]));
    sb.deliver(&esr_file("SEV", "RMC", "20220801", 3, &[por(3, "C", "first content")]));
    sb.run_once();
    sb.skip("SEV", 3, "withdrawn");
    sb.skip("SEV", 2, "never sent");
    sb.deliver(&esr_file("SEV", "RMC", "20220801", 3, &[por(3, "C", "corrected content")]));
    sb.run_once();

    let status = sb.status_json();
    assert_eq!(count(&status, "duplicate_files"), 0, "{status:#}");
    assert_eq!(title(record(&sb.export_lines(), "POR", "3")), Some("corrected content"));
}

/// Two names claiming one SEQ in one region: the first claimant owns it, the second is a
/// visible `conflict:` naming the first, and none of its lines is applied.
#[test]
fn two_files_claiming_one_seq_in_one_pass_are_never_merged() {
    let sb = Sandbox::new();
    let owner = sb.deliver(&esr_file("SEV", "RMC", "20220730", 1, &[por(1, "C", "change file"), por(2, "C", "two")]));
    let second = sb.deliver(&esr_file("SEV", "RMF", "20220730", 1, &[por(1, "C", "full file"), por(9, "C", "nine")]));
    sb.deliver(&esr_file("SEV", "RMC", "20220731", 2, &[por(3, "C", "three")]));
    sb.run_once();

    let status = sb.status_json();
    let reason = quarantine_reason(&status, &second).unwrap_or_else(|| panic!("{second} not quarantined:\n{status:#}"));
    assert!(reason.starts_with("conflict:") && reason.contains(&owner), "{reason}");
    assert_eq!(count(&status, "applied_files"), 2, "{status:#}");
    let export = sb.export_lines();
    assert_eq!(title(record(&export, "POR", "1")), Some("change file"));
    assert!(find_record(&export, "POR", "9").is_none(), "the second claimant was merged:\n{export:#?}");
    assert_eq!(next_seq(&status, "SEV"), Some(3), "{status:#}");
}

#[test]
fn a_later_file_claiming_an_applied_seq_under_another_date_is_a_conflict() {
    let sb = Sandbox::new();
    let owner = sb.deliver(&esr_file("SEV", "RMC", "20220730", 1, &[por(1, "C", "original")]));
    sb.run_once();
    let second = sb.deliver(&esr_file("SEV", "RMC", "20220805", 1, &[por(1, "C", "impostor")]));
    sb.run_once();

    let status = sb.status_json();
    let reason = quarantine_reason(&status, &second).unwrap_or_else(|| panic!("{second} not quarantined:\n{status:#}"));
    assert!(reason.starts_with("conflict:") && reason.contains(&owner), "{reason}");
    assert_eq!(title(record(&sb.export_lines(), "POR", "1")), Some("original"));
    assert_eq!(count(&status, "applied_files"), 1, "{status:#}");
}

/// A second claimant that arrives while the first is still held does not let the stream
/// pass the SEQ on its own strength.
#[test]
fn a_second_claimant_never_moves_the_stream() {
    let sb = Sandbox::new();
    sb.deliver(&esr_file("SEV", "RMC", "20220730", 1, &[por(1, "C", "one")]));
    sb.run_once();
    // SEQ 2 arrives broken (quarantined), then another name claims SEQ 2.
    let (broken_name, broken) = esr_file("SEV", "RMC", "20220731", 2, &[por(2, "C", "two")]);
    sb.write_file(&broken_name, broken.replace("TRL,1", "TRL,7"));
    sb.run_once();
    let second = sb.deliver(&esr_file("SEV", "RMF", "20220731", 2, &[por(2, "C", "other two")]));
    sb.run_once();

    let status = sb.status_json();
    assert_eq!(next_seq(&status, "SEV"), Some(2), "{status:#}");
    let reason = quarantine_reason(&status, &second).unwrap_or_else(|| panic!("{second} not quarantined:\n{status:#}"));
    assert!(reason.starts_with("conflict:") && reason.contains(&broken_name), "{reason}");
    assert!(find_record(&sb.export_lines(), "POR", "2").is_none());
}

/// A carriage return not followed by a line feed would make two records share one line
/// number: the file is refused with a reason that says so.
#[test]
fn a_lone_carriage_return_quarantines_the_file_with_a_clear_reason() {
    let sb = Sandbox::new();
    let name = esr_name("SEV", "RMC", "20220730", 1);
    for (i, content) in [
        format!("{}\n{}\r{}\nTRL,2\n", header("RMC", "SEV", "20220730", 1), por(1, "C", "a"), por(2, "C", "b")),
        format!("{}\r{}\rTRL,1\r", header("RMC", "SEV", "20220730", 1), por(1, "C", "a")),
        format!("{}\n{}\nTRL,1\n", header("RMC", "SEV", "20220730", 1), por(1, "C", "a\rb")),
    ]
    .iter()
    .enumerate()
    {
        sb.write_file(&name, content);
        sb.run_once();
        let status = sb.status_json();
        let reason =
            quarantine_reason(&status, &name).unwrap_or_else(|| panic!("case {i} not quarantined:\n{status:#}"));
        assert!(reason.contains("carriage return"), "case {i}: {reason}");
        assert_eq!(count(&status, "records_applied"), 0, "case {i}: {status:#}");
        assert_eq!(count(&status, "records_rejected"), 0, "case {i}: {status:#}");
    }
    // CRLF throughout is fine.
    let (_, good) = esr_file("SEV", "RMC", "20220730", 1, &[por(1, "C", "a"), por(2, "C", "b")]);
    sb.write_file(&name, good.replace('\n', "\r\n"));
    sb.run_once();
    let status = sb.status_json();
    assert_eq!(count(&status, "records_applied"), 2, "{status:#}");
    assert!(quarantined_files(&status).is_empty(), "{status:#}");
}

/// A name quarantined as `bad name:` under a narrow pattern is judged again once the
/// pattern is widened: no re-upload needed, and a re-upload works too.
#[test]
fn bad_names_are_judged_again_when_the_pattern_changes() {
    let narrow = r#"
[profile]
name_pattern = '^DE_(?P<region>SEV)_(?P<kind>RMC)_(?P<date>\d{8})_(?P<seq>\d{8})\.DAT$'
"#;
    let sb = Sandbox::with_config(narrow);
    sb.deliver(&esr_file("SEV", "RMC", "20220730", 1, &[por(1, "C", "one")]));
    let rmf = sb.deliver(&esr_file("SEV", "RMF", "20220731", 2, &[por(2, "C", "two")]));
    let wes = sb.deliver(&esr_file("WES", "RMC", "20220731", 5, &[por(5, "C", "five")]));
    sb.run_once();
    let status = sb.status_json();
    assert!(quarantine_reason(&status, &rmf).is_some_and(|r| r.starts_with("bad name:")), "{status:#}");
    // A re-upload under the narrow pattern is still a bad name.
    sb.touch_newer(&wes);
    sb.run_once();
    assert!(quarantine_reason(&sb.status_json(), &wes).is_some_and(|r| r.starts_with("bad name:")));

    let config = sb.config.as_ref().expect("a config file");
    std::fs::write(config, narrow.replace("(?P<region>SEV)", "(?P<region>[A-Z]{3})").replace("RMC)", "RM[CF])"))
        .expect("widen the pattern");
    sb.run_once();

    let status = sb.status_json();
    assert!(quarantined_files(&status).is_empty(), "{status:#}");
    assert_eq!(next_seq(&status, "SEV"), Some(3), "{status:#}");
    assert_eq!(next_seq(&status, "WES"), Some(6), "{status:#}");
    let export = sb.export_lines();
    record(&export, "POR", "2");
    record(&export, "POR", "5");
}

/// One object that cannot be read (here an applied name replaced by a FIFO, which would
/// block whoever opens it) affects that object alone, visibly: the run names it and every
/// other region goes on.
#[test]
fn an_unreadable_object_affects_only_itself() {
    let sb = Sandbox::new();
    let sev = sb.deliver(&esr_file("SEV", "RMC", "20220730", 1, &[por(1, "C", "applied before")]));
    sb.deliver(&esr_file("WES", "RMC", "20220730", 1, &[por(2, "C", "wes one")]));
    sb.run_once();
    let path = sb.inbox.join(&sev);
    std::fs::remove_file(&path).expect("remove");
    let c_path = std::ffi::CString::new(path.to_str().expect("a UTF-8 path")).expect("a C path");
    // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0, "mkfifo");
    sb.deliver(&esr_file("WES", "RMC", "20220731", 2, &[por(3, "C", "wes two")]));
    sb.deliver(&esr_file("YHD", "RMC", "20220731", 5, &[por(4, "C", "a new region")]));

    let mut child = sb.command(&["run", "--once"]).stdout(std::process::Stdio::null()).spawn().expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("run --once hung on an object that cannot be read");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(code, Some(1), "the object that cannot be read is reported");
    let status = sb.status_json();
    assert_eq!(next_seq(&status, "WES"), Some(3), "{status:#}");
    assert_eq!(next_seq(&status, "YHD"), Some(6), "{status:#}");
    assert_eq!(title(record(&sb.export_lines(), "POR", "1")), Some("applied before"));
}

/// A bad name judged again after its SEQ was claimed by another name claims it from then
/// on: it is a conflict, never a late file merged into the SEQ.
#[test]
fn a_rejudged_bad_name_does_not_take_a_seq_claimed_meanwhile() {
    let narrow =
        "[profile]\nname_pattern = '^DE_(?P<region>SEV)_(?P<kind>RMC)_(?P<date>\\d{8})_(?P<seq>\\d{8})\\.DAT$'\n";
    let sb = Sandbox::with_config(narrow);
    let early = sb.deliver(&esr_file("SEV", "RMF", "20220731", 2, &[por(9, "C", "the early bad name")]));
    sb.deliver(&esr_file("SEV", "RMC", "20220730", 1, &[por(1, "C", "one")]));
    sb.run_once();
    let owner = sb.deliver(&esr_file("SEV", "RMC", "20220731", 2, &[por(2, "C", "two")]));
    sb.run_once();
    let config = sb.config.as_ref().expect("a config file");
    std::fs::write(config, narrow.replace("RMC)", "RM[CF])")).expect("widen the pattern");
    sb.run_once();

    let status = sb.status_json();
    let reason = quarantine_reason(&status, &early).unwrap_or_else(|| panic!("{early} not quarantined:\n{status:#}"));
    assert!(reason.starts_with("conflict:") && reason.contains(&owner), "{reason}");
    assert!(find_record(&sb.export_lines(), "POR", "9").is_none(), "the second claimant was applied");
}
