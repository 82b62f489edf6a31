//! The long-running service as a process: health endpoints, one `run` per embedded
//! store, and graceful shutdown on SIGTERM.

mod common;

use common::service::Service;
use std::process::Command;
use std::time::{Duration, Instant};

fn start(dir: &std::path::Path) -> Service {
    std::fs::write(dir.join("esr.toml"), "poll_interval = \"100ms\"\n[health]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    Service::start(dir, &["--source", "inbox", "--store", "state.db"])
}

fn get(port: u16, path: &str) -> (u16, serde_json::Value) {
    let (code, body) = common::service::get_text(port, path);
    (code, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
}

#[test]
fn health_endpoints_lock_and_graceful_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let line = "POR,1,,C,42,Staff Nurse,DPN1,SEV,Y,RA7,1234,Org,Loc";
    std::fs::write(inbox.join("DE_SEV_RMC_20220730_00000001.DAT"), format!("HDR,RMC,SEV,20220730,1\n{line}\nTRL,1\n"))
        .unwrap();
    let mut service = start(dir.path());

    let (code, body) = get(service.port, "/healthz");
    assert_eq!((code, &body["alive"]), (200, &serde_json::json!(true)), "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = get(service.port, "/readyz");
        if code == 200 {
            assert_eq!(body["ready"], true);
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // /status serves the `status --json` document
    service.wait_for("/status", Duration::from_secs(10), |_, body| body.contains("\"applied_files\":1"));
    let (code, body) = get(service.port, "/status");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["counts"]["applied_files"], 1, "{body}");
    assert_eq!(body["streams"][0]["region"], "SEV", "{body}");
    assert_eq!(body["streams"][0]["next_seq"], 2, "{body}");

    // a second service on the same store is refused, clearly
    let second = Command::new(common::bin())
        .current_dir(dir.path())
        .args(["--source", "inbox", "--store", "state.db", "run", "--once"])
        .env_remove("ESR_INGEST_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already using the store"), "{stderr}");

    // SIGTERM: the service finishes and exits 0 promptly
    let pid = service.child.id() as i32;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = service.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the service did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));

    // the file was applied, and the lock is gone with the process
    let out = Command::new(common::bin())
        .current_dir(dir.path())
        .args(["--source", "inbox", "--store", "state.db", "run", "--once"])
        .env_remove("ESR_INGEST_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let export =
        Command::new(common::bin()).current_dir(dir.path()).args(["--store", "state.db", "export"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&export.stdout).lines().count(), 1);
}
