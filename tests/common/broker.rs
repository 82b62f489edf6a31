//! Helpers for the tests that run the pipeline through RabbitMQ (and MongoDB).
//!
//! Every test gets its own exchange and queues (names with a unique suffix), so tests
//! share one broker without seeing each other's messages. Tests that harm the broker
//! start a node of their own ([`RabbitNode`]).

#![allow(dead_code)]

use super::{Sandbox, bin, describe};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub fn amqp_url() -> String {
    std::env::var("ESR_TEST_AMQP_URL")
        .expect("ESR_TEST_AMQP_URL is not set: run the tests with scripts/test.sh, which starts the servers")
}

pub fn mongo_uri() -> String {
    std::env::var("ESR_TEST_MONGO_URI")
        .expect("ESR_TEST_MONGO_URI is not set: run the tests with scripts/test.sh, which starts the servers")
}

/// A name no other test, and no earlier run of this one, has used: process ids come
/// back over a long soak, so the process's start time is part of it.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    static START: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let start = START.get_or_init(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() % 1_000_000_000)
    });
    format!("{prefix}-{}-{start}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// A config using `url` with queue names of its own, plus `extra` TOML for [rabbitmq].
pub fn broker_config(url: &str, names: &str, extra: &str) -> String {
    format!(
        "broker = \"{url}\"\npoll_interval = \"1s\"\n[rabbitmq]\nexchange = \"{names}.x\"\nqueue = \"{names}.q\"\n\
         dead_letter_exchange = \"{names}.dlx\"\ndead_letter_queue = \"{names}.dlq\"\n{extra}\n"
    )
}

/// Generates synthetic files into `inbox`.
pub fn generate(inbox: &Path, regions: &str, days: u32, records: u64, seed: u64) {
    let out = Command::new(bin())
        .args(["generate", "--out"])
        .arg(inbox)
        .args(["--regions", regions, "--days", &days.to_string(), "--records", &records.to_string()])
        .args(["--seed", &seed.to_string()])
        .output()
        .expect("run generate");
    assert!(out.status.success(), "generate failed\n{}", describe(&out));
}

/// Copies every file of `from` into the sandbox's inbox.
pub fn copy_inbox(from: &Path, to: &Sandbox) {
    for entry in std::fs::read_dir(from).expect("read inbox") {
        let entry = entry.expect("dir entry");
        std::fs::copy(entry.path(), to.inbox.join(entry.file_name())).expect("copy a file");
    }
}

/// What the embedded mode exports for the files of `inbox`.
pub fn embedded_export(inbox: &Path) -> Vec<u8> {
    let reference = Sandbox::new();
    copy_inbox(inbox, &reference);
    reference.run_once();
    reference.export_raw()
}

/// Waits for a child, failing the test after `limit`.
pub fn wait_with_limit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("the process did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Spawns `run --once` with stderr captured to a file; returns the child and the log path.
pub fn spawn_run_once(sandbox: &Sandbox, envs: &[(&str, &str)]) -> (Child, PathBuf) {
    let log = sandbox.dir.path().join(format!("{}.log", unique("run")));
    let mut cmd = sandbox.command(&["run", "--once"]);
    cmd.stdout(Stdio::null()).stderr(std::fs::File::create(&log).expect("create the log"));
    for (k, v) in envs {
        cmd.env(k, v);
    }
    (cmd.spawn().expect("spawn run --once"), log)
}

pub fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Polls until `check` holds (or fails the test after `limit`).
pub fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls until `check` holds while `child` runs. Fails at once, with the child's log,
/// when the child exits first; on a timeout the failure shows the log and `last`, the
/// last thing `check` saw.
pub fn eventually_while_running(
    what: &str,
    limit: Duration,
    child: &mut Child,
    log: &Path,
    mut check: impl FnMut(&mut String) -> bool,
) {
    let start = Instant::now();
    let mut last = String::new();
    while !check(&mut last) {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            panic!("the process exited ({status}) before {what}\nlast seen: {last}\nlog:\n{}", log_text(log));
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("timed out after {limit:?} waiting for {what}\nlast seen: {last}\nlog:\n{}", log_text(log));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A RabbitMQ node of a test's own, started by `scripts/servers.sh` on a free port.
pub struct RabbitNode {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub dist_port: u16,
    pub node: String,
}

/// Ports for a node's AMQP listener and Erlang distribution, both free and below the
/// kernel's ephemeral range: an outgoing connection of any other process could otherwise
/// hold one of them when the node starts, or restarts after a kill.
fn free_ports() -> (u16, u16) {
    use rand::Rng;
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let port = rng.random_range(20_000..32_000u16);
        if port % 2 == 0 && free(port) && free(port + 1) {
            return (port, port + 1);
        }
    }
    panic!("no free pair of ports below the ephemeral range for a RabbitMQ node");
}

fn servers_script() -> PathBuf {
    crate::common::project_root().join("scripts/servers.sh")
}

impl RabbitNode {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for a RabbitMQ node");
        let (port, dist_port) = free_ports();
        let node = unique("esrfault").replace('-', "_");
        let n = RabbitNode { dir, port, dist_port, node };
        n.launch();
        n
    }

    fn script(&self, action: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(servers_script()).arg(action).arg(self.dir.path()).arg("rabbitmq");
        cmd.env("ESR_AMQP_PORT", self.port.to_string())
            .env("ESR_RABBIT_DIST_PORT", self.dist_port.to_string())
            .env("ESR_RABBIT_NODE", &self.node);
        cmd
    }

    /// Starts the node (again, after a kill: durable queues and messages come back).
    pub fn launch(&self) {
        let out = self.script("start").output().expect("run servers.sh start");
        assert!(out.status.success(), "RabbitMQ node did not start\n{}", describe(&out));
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl")
            .arg("-n")
            .arg(format!("{}@localhost", self.node))
            .args(args)
            .env("HOME", self.dir.path().join("rabbit"))
            .output()
            .expect("run rabbitmqctl")
    }

    /// The Erlang VM's process id.
    pub fn pid(&self) -> i32 {
        let text =
            std::fs::read_to_string(self.dir.path().join("rabbit/rabbit.pid")).expect("read the node's pid file");
        text.trim().parse().expect("a pid")
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status().expect("kill");
        assert!(status.success(), "kill -{signal} failed");
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(self.dir.path().join("rabbit/rabbit.pid")).unwrap_or_default();
        let pid = pid.trim().to_string();
        if !pid.is_empty() {
            let _ = Command::new("kill").arg("-CONT").arg(&pid).status();
        }
        let _ = self.script("stop").output();
        if !pid.is_empty() {
            let _ = Command::new("kill").arg("-KILL").arg(&pid).output();
        }
    }
}
