//! No output of any command contains a secret: URL passwords, a webhook's path.
//! Each case makes the secret meet the error path that used to print it.

mod common;

use common::service::Service;
use common::*;
use std::time::{Duration, Instant};

fn assert_clean(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "{what} shows the secret {secret:?}:\n{text}");
    }
}

#[test]
fn a_broker_url_with_a_bad_scheme_is_refused_without_its_password() {
    let sb = Sandbox::new();
    let out = sb.run(&["--broker", "http://user:BrokerPw7781@broker.example:5672/", "status"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let text = describe(&out);
    assert!(text.contains("amqp"), "{text}");
    assert_clean("a usage error", &text, &["BrokerPw7781"]);
}

#[test]
fn a_mistyped_store_uri_is_refused_without_its_password() {
    let sb = Sandbox::new();
    let mut cmd = sb.command(&["status"]);
    cmd.args(["--store", "mongo://esr:MongoPw8812@db.example:27017/esr"]);
    let out = cmd.output().expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert_clean("a usage error", &describe(&out), &["MongoPw8812"]);
}

#[test]
fn an_unreachable_mongodb_store_fails_without_its_password() {
    let sb = Sandbox::new();
    let uri = "mongodb://esr:MongoPw5521@127.0.0.1:1/esr?serverSelectionTimeoutMS=300&connectTimeoutMS=300";
    let mut cmd = sb.command(&["status"]);
    cmd.args(["--store", uri]);
    let out = cmd.output().expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_clean("the store error", &describe(&out), &["MongoPw5521"]);
}

/// An unreachable webhook: every retry is logged, and neither the logs (JSON) nor any
/// page of the health server shows the webhook's path.
#[test]
fn an_unreachable_webhook_never_shows_its_path() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    }; // closed again: connections are refused
    let secret = "services/T0SECRET/B0SECRET/HookPath4417";
    let dir = tempfile::tempdir().expect("temp dir");
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).expect("inbox");
    std::fs::write(inbox.join("DE_WES_RMC_20220730_00000001.DAT"), "HDR,RMC,WES,20220730,00000001\nTRL,5\n")
        .expect("write");
    let config = "poll_interval = \"200ms\"\n[health]\nlisten = \"127.0.0.1:0\"\n";
    std::fs::write(dir.path().join("esr.toml"), config).expect("config");
    let url = format!("http://127.0.0.1:{port}/{secret}");
    let service = Service::start_with_env(
        dir.path(),
        &["--source", "inbox", "--store", "state.db"],
        &[("ESR_INGEST_WEBHOOK_URL", url.as_str())],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !service.log_text().to_lowercase().contains("webhook") && !service.log_text().contains("notif") {
        assert!(Instant::now() < deadline, "no notification attempt was logged:\n{}", service.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2)); // a few retries
    let pieces = ["T0SECRET", "B0SECRET", "HookPath4417"];
    assert_clean("the log", &service.log_text(), &pieces);
    for path in ["/", "/status", "/metrics", "/readyz", "/healthz"] {
        let (_, body) = service.get(path);
        assert_clean(path, &body, &pieces);
    }
}
