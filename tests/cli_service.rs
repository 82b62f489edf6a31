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

/// Between reconciles the service's passes look only at new names and active files: a new
/// file is applied by the next quick pass, while a settled file written again in place
/// with other content is found by the next full pass (`reconcile_interval`), quarantined
/// as a conflict.
#[test]
fn quick_passes_find_new_files_and_the_reconcile_finds_a_settled_file_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let file = |seq: u64, title: &str| {
        let line = format!("POR,{seq},,C,42,{title},DPN1,SEV,Y,RA7,1234,Org,Loc");
        format!("HDR,RMC,SEV,2022080{seq},{seq}\n{line}\nTRL,1\n")
    };
    let first = inbox.join("DE_SEV_RMC_20220801_00000001.DAT");
    std::fs::write(&first, file(1, "Nurse")).unwrap();
    std::fs::write(
        dir.path().join("esr.toml"),
        "poll_interval = \"100ms\"\nreconcile_interval = \"3s\"\n[health]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let service = Service::start(dir.path(), &["--source", "inbox", "--store", "state.db"]);
    service.wait_for("/status", Duration::from_secs(10), |_, body| body.contains("\"applied_files\":1"));
    service.wait_for("/metrics", Duration::from_secs(10), |_, body| {
        body.contains("esr_ingest_last_pass_seconds{listing=\"quick\"}")
    });

    std::fs::write(inbox.join("DE_SEV_RMC_20220802_00000002.DAT"), file(2, "Doctor")).unwrap();
    service.wait_for("/status", Duration::from_secs(10), |_, body| body.contains("\"applied_files\":2"));

    std::fs::write(&first, file(1, "Surgeon")).unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(60);
    std::fs::File::options().write(true).open(&first).unwrap().set_modified(later).unwrap();
    let (_, body) = service.wait_for("/status", Duration::from_secs(20), |_, body| body.contains("conflict:"));
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(common::quarantined_files(&status), vec!["DE_SEV_RMC_20220801_00000001.DAT"], "{status:#}");
    let (_, metrics) = service.get("/metrics");
    assert!(metrics.contains("esr_ingest_last_pass_seconds{listing=\"full\"}"), "{metrics}");
}
