//! Broker faults, each on a RabbitMQ node of the test's own: the broker SIGKILLed and
//! restarted mid-publish, frozen (SIGSTOP) for 20 s, blocked by a memory alarm from the
//! start, and every connection closed between two files of a unit.
//! Each asserts that nothing is lost: the final export equals the embedded export of the
//! same files, and every line is counted once.

mod common;

use common::broker::*;
use common::{Sandbox, count};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(300);

/// Many small messages, so the fault lands while publishing.
fn faulty_setup(node: &RabbitNode) -> (tempfile::TempDir, Sandbox) {
    let inbox = tempfile::tempdir().unwrap();
    generate(inbox.path(), "SEV,WES,WMD", 4, 1500, 5);
    let s = Sandbox::with_config(&broker_config(
        &node.url(),
        &unique("esr-fault"),
        "records_per_message = 1\nin_flight = 64",
    ));
    copy_inbox(inbox.path(), &s);
    (inbox, s)
}

/// A node, the files, and `run --once` caught mid-publish: ready for a fault.
struct Scenario {
    node: RabbitNode,
    inbox: tempfile::TempDir,
    sandbox: Sandbox,
    run: std::process::Child,
    log: std::path::PathBuf,
}

fn mid_publish() -> Scenario {
    let node = RabbitNode::start();
    let (inbox, sandbox) = faulty_setup(&node);
    let (mut run, log) = spawn_run_once(&sandbox, &[]);
    wait_until_mid_publish(&sandbox, &mut run, &log);
    assert!(run.try_wait().unwrap().is_none(), "the fault lands while the run works\n{}", log_text(&log));
    Scenario { node, inbox, sandbox, run, log }
}

impl Scenario {
    /// The run ends with exit 0 and nothing was lost; returns the run's log.
    fn finishes_losing_nothing(mut self, what: &str) -> String {
        let status = wait_with_limit(&mut self.run, LIMIT);
        let log = log_text(&self.log);
        assert!(status.success(), "run --once survives {what}\n{log}");
        assert_nothing_lost(&self.inbox, &self.sandbox);
        log
    }
}

/// Waits until the run has published part of the work (a file is delivered).
fn wait_until_mid_publish(s: &Sandbox, run: &mut std::process::Child, log: &std::path::Path) {
    eventually_while_running("the first delivered file", LIMIT, run, log, |last| {
        let out = s.run(&["status", "--json"]);
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
            *last = common::describe(&out);
            return false;
        };
        *last = format!("applied_files {} in_flight {}", count(&v, "applied_files"), v["in_flight"]);
        count(&v, "applied_files") > 0 || v["in_flight"].as_array().is_some_and(|a| !a.is_empty())
    });
}

fn assert_nothing_lost(inbox: &tempfile::TempDir, s: &Sandbox) {
    assert_eq!(s.export_raw(), embedded_export(inbox.path()), "final export equals the embedded export");
    let st = s.status_json();
    assert_eq!(count(&st, "applied_files"), 12, "{st}");
    assert_eq!(
        count(&st, "records_applied") + count(&st, "records_stale") + count(&st, "records_unchanged"),
        3 * 4 * 1500,
        "every line counted once: {st}"
    );
}

#[test]
fn broker_killed_and_restarted_mid_publish() {
    let scenario = mid_publish();
    scenario.node.signal("KILL");
    std::thread::sleep(Duration::from_secs(2));
    scenario.node.launch();
    let log = scenario.finishes_losing_nothing("the broker restart");
    assert!(log.contains("reconnect"), "the restart was noticed\n{log}");
}

#[test]
fn broker_frozen_for_20_seconds() {
    let scenario = mid_publish();
    scenario.node.signal("STOP");
    std::thread::sleep(Duration::from_secs(20));
    scenario.node.signal("CONT");
    let _ = scenario.finishes_losing_nothing("the frozen broker");
}

/// The alarm is raised before the run starts, so the block lands on the first publish
/// whatever the speed of the machine (raised mid-publish, a fast run may have published
/// everything before the broker reacts).
#[test]
fn memory_alarm_pauses_publishing_until_lifted() {
    let node = RabbitNode::start();
    let (inbox, sandbox) = faulty_setup(&node);
    let raised = node.ctl(&["set_vm_memory_high_watermark", "absolute", "1"]);
    assert!(raised.status.success(), "{}", common::describe(&raised));
    let (mut run, log) = spawn_run_once(&sandbox, &[]);
    eventually_while_running("the blocked notice", Duration::from_secs(60), &mut run, &log, |_| {
        log_text(&log).contains("blocked")
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(run.try_wait().unwrap().is_none(), "publishing waits while the alarm is on\n{}", log_text(&log));
    assert_eq!(count(&sandbox.status_json(), "applied_files"), 0, "nothing is applied while blocked");
    let lifted = node.ctl(&["set_vm_memory_high_watermark", "0.4"]);
    assert!(lifted.status.success(), "{}", common::describe(&lifted));
    let scenario = Scenario { node, inbox, sandbox, run, log };
    let _ = scenario.finishes_losing_nothing("the memory alarm");
}

/// Every connection closed by the broker exactly between two files of a unit (the first
/// settled, the next not yet published on the unit's channel): the unit goes on over a
/// new connection, the consumers reconnect, and each file is counted once, under the
/// generation it started with.
#[test]
fn connections_closed_between_two_files_of_a_unit() {
    let node = RabbitNode::start();
    let inbox = tempfile::tempdir().unwrap();
    generate(inbox.path(), "SEV", 4, 300, 23);
    let s = Sandbox::with_config(&broker_config(&node.url(), &unique("esr-fault"), "records_per_message = 10"));
    copy_inbox(inbox.path(), &s);
    // The first file goes alone; the unit of the other three pauses when it moves on to
    // its second file.
    let (mut run, log) = spawn_run_once(&s, &[("ESR_INGEST_FAULT", "publisher-pause-between-files:1")]);
    eventually_while_running("the pause between two files", LIMIT, &mut run, &log, |_| {
        log_text(&log).contains("pausing between two files of a unit")
    });
    let closed = node.ctl(&["close_all_connections", "closed by the test"]);
    assert!(closed.status.success(), "{}", common::describe(&closed));
    let status = wait_with_limit(&mut run, LIMIT);
    let text = log_text(&log);
    assert!(status.success(), "run --once survives the closed connections\n{text}");
    assert!(text.contains("reconnect"), "the closed connection was noticed\n{text}");

    assert_eq!(s.export_raw(), embedded_export(inbox.path()), "final export equals the embedded export");
    let st = s.status_json();
    assert_eq!(count(&st, "applied_files"), 4, "{st}");
    let counted = count(&st, "records_applied") + count(&st, "records_stale") + count(&st, "records_unchanged");
    assert_eq!(counted, 1200, "every line counted once: {st}");
    // The unit stayed whole across the reconnect: none of its files was deferred to resume.
    assert_eq!(text.matches("together=3").count(), 3, "the unit's three files went out together\n{text}");
    assert!(!text.contains("not delivered"), "no file of the unit failed\n{text}");
}
