//! Replays of the incidents esr-ingest exists to prevent (see the README). Each test makes
//! the incident happen to the real binary and asserts how it is detected (which signal,
//! within how long) and that nothing is lost.

mod common;

use common::service::Service;
use common::webhook::Receiver;
use common::*;
use std::time::{Duration, Instant};

/// A small burst: three regions, four days each, in SEQ order per region.
fn burst(sb: &Sandbox) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for (r, region) in ["SEV", "WES", "YHD"].iter().enumerate() {
        for day in 0..4u32 {
            let seq = 10 + day;
            let id = 1000 * (r as u64 + 1);
            let records = [por(id, "C", &format!("{region} day {day}")), pos(id + u64::from(day), "C", "x")];
            files.push(esr_file(region, "RMC", &format!("202208{:02}", 1 + day), seq, &records));
        }
    }
    let _ = sb;
    files
}

fn reference_export(files: &[(String, String)]) -> String {
    let sb = Sandbox::new();
    for f in files {
        sb.deliver(f);
        sb.run_once();
    }
    sb.export_text()
}

/// Incident 1: the broker became unstable and the publisher never checked that messages
/// arrived. Here every publish and confirm may fail (injected at the delivery port over a
/// real RabbitMQ): the run that meets the faults says so (exit 1, naming a file), no file
/// is marked done before the broker confirmed all of it, and a later run loses nothing.
#[test]
fn incident_1_an_unstable_broker_loses_nothing_and_is_reported() {
    use common::broker::*;
    let files = burst(&Sandbox::new());
    let reference = reference_export(&files);
    let s = Sandbox::with_config(&broker_config(&amqp_url(), &unique("esr-incident"), "records_per_message = 1"));
    for f in &files {
        s.deliver(f);
    }
    let started = Instant::now();
    let out =
        s.command(&["run", "--once"]).env("ESR_INGEST_FAULTS", "seed=5,rate=0.3,kinds=before+after").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "the faults are reported\n{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(".DAT"), "the error names a file\n{}", describe(&out));
    assert!(started.elapsed() < Duration::from_secs(60), "detected within a minute");
    s.run_once();
    assert_eq!(s.export_text(), reference, "nothing lost, nothing stale");
    assert_eq!(count(&s.status_json(), "applied_files"), files.len() as u64);
}

/// Incident 2: scheduled jobs silently did not run for days. A region whose file has
/// not come by its deadline (here: nothing of it at all, while other regions deliver) is
/// flagged in `status`, on `/metrics` and by a webhook message, within seconds.
#[test]
fn incident_2_a_file_that_does_not_come_is_alerted_within_seconds() {
    let hook = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    // Other regions deliver; SEV's job has silently stopped: nothing of it arrives.
    let (name, text) = esr_file("WES", "RMC", "20220801", 1, &[por(1, "C", "another region")]);
    std::fs::write(inbox.join(name), text).unwrap();
    let config = format!(
        "poll_interval = \"200ms\"\n[health]\nlisten = \"127.0.0.1:0\"\n[alerts]\nwebhook_url = \"{}\"\n\
         [[expect]]\nregions = [\"SEV\"]\ndays = [\"daily\"]\nby = \"00:00\"\ntimezone = \"UTC\"\n",
        hook.url
    );
    std::fs::write(dir.path().join("esr.toml"), config).unwrap();
    let started = Instant::now();
    let service = Service::start(dir.path(), &["--source", "inbox", "--store", "state.db"]);
    let (_, status) = service
        .wait_for("/status", Duration::from_secs(10), |code, body| code == 200 && body.contains("\"late_alert\":true"));
    assert!(status.contains("\"late_alert\":true"), "{status}");
    let (_, metrics) = service.get("/metrics");
    assert!(
        metrics.lines().any(|l| l.starts_with("esr_ingest_late_alert{") && l.contains("SEV") && l.ends_with(" 1")),
        "{}",
        metrics.lines().filter(|l| l.contains("late") || l.contains("SEV")).collect::<Vec<_>>().join("\n")
    );
    let messages = hook.wait_for(1, Duration::from_secs(30));
    assert!(messages.iter().any(|m| m.contains("late")), "{messages:?}");
    assert!(started.elapsed() < Duration::from_secs(40));
}

/// Incident 3: a burst of files after an outage was processed out of order, so older data
/// overwrote newer, and failed files had to be found and replayed by hand. Here the burst
/// arrives shuffled with one broken file: everything is applied in SEQ order, the broken
/// file holds only its region and is named in `status` at once, and its corrected upload
/// is picked up with no other action.
#[test]
fn incident_3_a_shuffled_burst_applies_in_order_and_a_failed_file_waits_visibly() {
    let sb = Sandbox::with_config("gap_alert_after = \"1s\"\n");
    let files = burst(&sb);
    let reference = reference_export(&files);
    let broken = &files[5]; // WES, the second day
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.reverse();
    for i in order {
        if i == 5 {
            sb.write_file(&broken.0, broken.1.replace("TRL,2", "TRL,3"));
        } else {
            sb.deliver(&files[i]);
        }
    }
    sb.run_once();
    let status = sb.status_json();
    let reason = quarantine_reason(&status, &broken.0).unwrap_or_else(|| panic!("not named: {status:#}"));
    assert!(reason.contains("trailer count"), "{reason}");
    assert_eq!(next_seq(&status, "WES"), Some(11), "{status:#}");
    assert_eq!(held(&status, "WES"), vec![12, 13], "{status:#}");
    assert_eq!(next_seq(&status, "SEV"), Some(14), "the other regions go on: {status:#}");
    std::thread::sleep(Duration::from_millis(1200));
    sb.run_once();
    assert!(gap_alert(&sb.status_json(), "WES"), "the wait is flagged after gap_alert_after");

    sb.deliver(broken); // the corrected upload, same name
    sb.run_once();
    assert_eq!(sb.export_text(), reference, "the result equals an in-order run");
    assert!(quarantined_files(&sb.status_json()).is_empty());
}

/// Incident 4: concurrent writes hit WriteConflict errors and the retry policy had been
/// lost, so records stayed stuck. Here one call in ten at every port fails with a
/// transient error: each is retried with backoff and jitter (logged as such), a file whose
/// last step still fails is taken up again by the next run, and nothing is left behind.
#[test]
fn incident_4_transient_store_errors_are_retried_until_nothing_is_stuck() {
    let sb = Sandbox::new();
    let files = burst(&sb);
    let reference = reference_export(&files);
    for f in &files {
        sb.deliver(f);
    }
    let (mut runs, mut logs) = (0, String::new());
    loop {
        runs += 1;
        let out = sb
            .command(&["run", "--once"])
            .env("ESR_INGEST_FAULTS", format!("seed={runs},rate=0.1,kinds=before"))
            .env("ESR_INGEST_LOG", "warn")
            .output()
            .unwrap();
        logs.push_str(&String::from_utf8_lossy(&out.stderr));
        if out.status.success() {
            break;
        }
        assert!(runs < 10, "still failing after {runs} runs\n{}", describe(&out));
    }
    assert!(logs.contains("retrying"), "retries are visible in the log:\n{logs}");
    assert_eq!(sb.export_text(), reference);
    let status = sb.status_json();
    assert_eq!(count(&status, "applied_files"), files.len() as u64, "{status:#}");
    assert_eq!(count(&status, "pending_files"), 0, "{status:#}");
}

/// Incident 5: under load, notifications were sent several times. Here the alert's
/// condition holds across passes and across a restart of the service: one message.
#[test]
fn incident_5_a_notification_is_sent_once_across_passes_and_restarts() {
    let hook = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(inbox.join("DE_WES_RMC_20220730_00000001.DAT"), "HDR,RMC,WES,20220730,00000001\nTRL,5\n").unwrap();
    let config = format!(
        "poll_interval = \"100ms\"\n[health]\nlisten = \"127.0.0.1:0\"\n[alerts]\nwebhook_url = \"{}\"\n",
        hook.url
    );
    std::fs::write(dir.path().join("esr.toml"), config).unwrap();
    let args = ["--source", "inbox", "--store", "state.db"];
    for _ in 0..3 {
        let service = Service::start(dir.path(), &args);
        hook.wait_for(1, Duration::from_secs(30));
        std::thread::sleep(Duration::from_secs(1)); // ~10 passes with the condition holding
        drop(service);
    }
    let quarantine: Vec<String> = hook
        .messages()
        .into_iter()
        .filter(|m| m.contains("ALERT quarantine/DE_WES_RMC_20220730_00000001.DAT"))
        .collect();
    assert_eq!(quarantine.len(), 1, "one message: {:?}", hook.messages());
}
