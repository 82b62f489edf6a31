//! Three `esr-ingest run` processes on one MongoDB-wire store and one RabbitMQ: each
//! region is driven by one instance at a time under a lease, and the regions are shared
//! out between the instances. One instance is SIGKILLed
//! and another frozen (SIGSTOP) past its lease while they work; the survivors take the
//! regions over, the frozen one's late writes are fenced out, and the result is exactly
//! the embedded mode's: every file applied once, every line counted once.

mod common;

use common::broker::*;
use common::service::Service;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const FILES: u64 = 4 * 6;
const LINES: u64 = FILES * 1500;

fn status(dir: &std::path::Path, store: &str) -> Value {
    let out = std::process::Command::new(common::bin())
        .current_dir(dir)
        .args(["--config", "esr.toml", "--source", "inbox", "--store", store, "status", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::describe(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Unexpired leases by owner (`host/pid/start`).
fn owners(st: &Value) -> BTreeMap<String, Vec<String>> {
    let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in st["leases"].as_array().unwrap() {
        if l["held"] == true {
            by.entry(l["owner"].as_str().unwrap().into()).or_default().push(l["lease"].as_str().unwrap().into());
        }
    }
    by
}

fn pid_of(owner: &str) -> u32 {
    owner.split('/').nth(1).unwrap().parse().unwrap()
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: signalling a child process this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

#[test]
fn three_instances_on_one_store_survive_a_kill_and_a_freeze() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    generate(&inbox, "SEV,WES,WMD,NWE", 6, 1500, 11);
    let names = unique("esr-instances");
    let config = format!(
        "lease_ttl = \"3s\"\n{}[health]\nlisten = \"127.0.0.1:0\"\n",
        broker_config(&amqp_url(), &names, "records_per_message = 50\nconsumers = 1")
    )
    .replace("poll_interval = \"1s\"", "poll_interval = \"300ms\"");
    std::fs::write(dir.path().join("esr.toml"), config).unwrap();
    let store = format!("{}/{}", mongo_uri().trim_end_matches('/'), names.replace('-', "_"));
    let args = ["--source", "inbox", "--store", store.as_str()];
    let mut instances: Vec<Service> = (0..3).map(|_| Service::start(dir.path(), &args)).collect();

    // Wait until the regions are shared out (no instance beyond its share of 2) and work
    // has started.
    let deadline = Instant::now() + Duration::from_secs(60);
    let first_owners = loop {
        let st = status(dir.path(), &store);
        let by = owners(&st);
        let shared_out = by.len() >= 2 && by.values().all(|l| l.len() <= 2);
        if by.values().map(Vec::len).sum::<usize>() >= 4 && shared_out && common::count(&st, "applied_files") >= 1 {
            break by;
        }
        assert!(Instant::now() < deadline, "regions never owned: {st}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for (owner, leases) in &first_owners {
        eprintln!("{owner}: {leases:?}");
    }

    // SIGKILL one owner mid-work.
    let killed = pid_of(first_owners.keys().next().unwrap());
    signal(killed, libc::SIGKILL);
    let killed_at = instances.iter().position(|s| s.child.id() == killed).unwrap();
    let _ = instances[killed_at].child.wait();

    // Once the survivors have taken regions over, freeze one owner past its lease.
    let deadline = Instant::now() + Duration::from_secs(60);
    let frozen = loop {
        let st = status(dir.path(), &store);
        let by = owners(&st);
        if let Some(owner) = by.keys().find(|o| pid_of(o) != killed) {
            break pid_of(owner);
        }
        assert!(Instant::now() < deadline, "no survivor took a region: {st}");
        std::thread::sleep(Duration::from_millis(200));
    };
    signal(frozen, libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(8)); // well past lease_ttl
    signal(frozen, libc::SIGCONT);

    // Everything ends applied, once.
    let deadline = Instant::now() + Duration::from_secs(240);
    let st = loop {
        let st = status(dir.path(), &store);
        let done = common::count(&st, "applied_files") >= FILES && st["in_flight"].as_array().unwrap().is_empty();
        if done {
            break st;
        }
        assert!(Instant::now() < deadline, "not all applied: {st}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(common::count(&st, "applied_files"), FILES, "every file applied exactly once: {st}");
    let counted = common::count(&st, "records_applied")
        + common::count(&st, "records_stale")
        + common::count(&st, "records_unchanged");
    assert_eq!(counted, LINES, "every line counted once: {st}");
    let tokens: Vec<u64> = st["leases"].as_array().unwrap().iter().map(|l| l["token"].as_u64().unwrap()).collect();
    assert!(tokens.iter().any(|t| *t >= 2), "leases changed hands after the kill: {st}");

    let export = std::process::Command::new(common::bin())
        .current_dir(dir.path())
        .args(["--config", "esr.toml", "--source", "inbox", "--store", &store, "export"])
        .output()
        .unwrap();
    assert!(export.status.success(), "{}", common::describe(&export));
    assert!(export.stdout == embedded_export(&inbox), "the export equals the embedded export of the same files");

    let frozen_log = instances.iter().find(|s| s.child.id() == frozen).map(Service::log_text).unwrap_or_default();
    eprintln!(
        "frozen instance: {} fenced write(s) refused after it woke",
        frozen_log.matches("region left to the instance that holds its lease").count()
    );
    for s in instances.iter_mut().filter(|s| s.child.id() != killed) {
        signal(s.child.id(), libc::SIGTERM);
        let status = wait_with_limit(&mut s.child, Duration::from_secs(30));
        assert!(status.success(), "a survivor stops cleanly on SIGTERM: {status}\n{}", s.log_text());
    }
}
