//! The service's operations surface as a process: `/metrics`, `/readyz` with its
//! dependencies, the status page, `/healthz` turning red when discovery stalls, and the
//! page as a browser renders it (headless Chromium).

mod common;

use common::service::Service;
use common::{esr_file, por};
use std::time::Duration;

const CONFIG: &str = "poll_interval = \"200ms\"\n[health]\nlisten = \"127.0.0.1:0\"\n";

/// A sandbox with SEV 1 (applied), SEV 3 (held behind a gap at 2) and a quarantined WES 1.
fn with_files() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    for (region, seq) in [("SEV", 1), ("SEV", 3)] {
        let (name, text) = esr_file(region, "RMC", "20220730", seq, &[por(u64::from(seq), "C", "Nurse")]);
        std::fs::write(inbox.join(name), text).unwrap();
    }
    let (name, _) = esr_file("WES", "RMC", "20220730", 1, &[por(9, "C", "Nurse")]);
    std::fs::write(inbox.join(name), "HDR,RMC,WES,20220730,00000001\nTRL,5\n").unwrap();
    std::fs::write(dir.path().join("esr.toml"), CONFIG).unwrap();
    dir
}

/// Waits until the first pass has applied SEV 1 and holds SEV 3.
fn settled(service: &Service) {
    service.wait_for("/status", Duration::from_secs(20), |code, body| {
        code == 200
            && serde_json::from_str::<serde_json::Value>(body)
                .is_ok_and(|v| v["counts"]["applied_files"] == 1 && v["streams"][0]["held"][0] == 3)
    });
}

/// `name{labels} value` lines of a Prometheus text body, checked for shape.
fn samples(body: &str) -> Vec<(String, f64)> {
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {l:?}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number in {l:?}"));
            let name_end = series.find('{').unwrap_or(series.len());
            assert!(
                series[..name_end].chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "bad metric name in {l:?}"
            );
            (series.to_string(), value)
        })
        .collect()
}

fn sample(samples: &[(String, f64)], series: &str) -> f64 {
    samples.iter().find(|(s, _)| s == series).map(|(_, v)| *v).unwrap_or_else(|| panic!("no sample {series}"))
}

#[test]
fn metrics_page_and_readiness() {
    let dir = with_files();
    let service = Service::start(dir.path(), &["--source", "inbox", "--store", "state.db"]);
    settled(&service);

    let (code, body) = service.get("/metrics");
    assert_eq!(code, 200, "{body}");
    let s = samples(&body);
    assert_eq!(sample(&s, "esr_ingest_records_total{outcome=\"applied\"}"), 1.0, "{body}");
    assert_eq!(sample(&s, "esr_ingest_files_total{outcome=\"applied\"}"), 1.0);
    assert_eq!(sample(&s, "esr_ingest_files{state=\"quarantined\"}"), 1.0);
    assert_eq!(sample(&s, "esr_ingest_held_files{region=\"SEV\"}"), 1.0, "SEV 3 waits for 2");
    assert!(sample(&s, "esr_ingest_gap_age_seconds{region=\"SEV\"}") >= 0.0);
    assert_eq!(sample(&s, "esr_ingest_gap_alert{region=\"SEV\"}"), 0.0);
    assert_eq!(sample(&s, "esr_ingest_late_alert{region=\"SEV\"}"), 0.0);
    assert!(sample(&s, "esr_ingest_seconds_since_last_file{region=\"SEV\"}") < 3600.0);
    assert!(sample(&s, "esr_ingest_passes_total{result=\"ok\"}") >= 1.0);
    let last_pass = sample(&s, "esr_ingest_last_discovery_timestamp_seconds");
    let now = chrono::Utc::now().timestamp() as f64;
    assert!((now - last_pass).abs() < 60.0, "last discovery {last_pass} vs now {now}");
    assert!(sample(&s, "esr_ingest_files_processed_total{outcome=\"applied\"}") >= 1.0);
    assert!(!body.contains("esr_ingest_dlq_messages"), "no dead-letter queue without a broker");

    let (code, page) = service.get("/");
    assert_eq!(code, 200);
    assert!(page.contains("<tr data-region=\"SEV\">"), "{page}");
    for (seq, state) in [(1, "applied"), (2, "gap"), (3, "held")] {
        assert!(page.contains(&format!("data-seq=\"{seq}\" data-state=\"{state}\"")), "SEQ {seq} {state}: {page}");
    }
    assert!(page.contains("quarantined DE_WES_RMC_20220730_00000001.DAT"), "{page}");

    let (code, ready) = service.get_json("/readyz");
    assert_eq!(code, 200, "{ready}");
    assert_eq!(
        (ready["store"].as_str(), ready["source"].as_str(), ready["delivery"].as_str()),
        (Some("ok"), Some("ok"), Some("ok"))
    );
    // the source goes away: not ready, and the reason names the source
    std::fs::rename(dir.path().join("inbox"), dir.path().join("gone")).unwrap();
    let (code, body) = service.wait_for("/readyz", Duration::from_secs(10), |code, _| code == 503);
    assert_eq!(code, 503);
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(ready["source"].as_str().unwrap().contains("does not exist"), "{ready}");
    assert_eq!(ready["store"], "ok");
}

/// An S3 endpoint that accepts connections and never answers: the first listing hangs,
/// so discovery makes no progress and liveness must fail.
#[test]
fn a_stalled_discovery_turns_healthz_red() {
    let (service, _dir) = service_on_a_hung_s3("30s");
    let (code, body) = service.wait_for("/healthz", Duration::from_secs(30), |code, _| code == 503);
    assert_eq!(code, 503);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["alive"], false);
    assert!(health["discovery"].as_str().unwrap().contains("no progress"), "{health}");
    let (code, ready) = service.get_json("/readyz");
    assert_eq!(code, 503, "the source does not answer either: {ready}");
    assert!(ready["source"].as_str().unwrap().contains("no answer"), "{ready}");
}

/// The page as a person sees it: rendered by Debian's Chromium, headless.
#[test]
fn the_status_page_renders_in_headless_chromium() {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("Chromium is not installed: run the tests with scripts/test.sh, which installs it");
    let dir = with_files();
    let service = Service::start(dir.path(), &["--source", "inbox", "--store", "state.db"]);
    settled(&service);
    let profile = tempfile::tempdir().unwrap();
    let shot = dir.path().join("page.png");
    let url = format!("http://127.0.0.1:{}/", service.port);
    let browse = |extra: &[&str]| {
        std::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("run chromium")
    };
    let dom = browse(&["--dump-dom"]);
    assert!(dom.status.success(), "{}", common::describe(&dom));
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("<title>esr-ingest status</title>"), "{dom}");
    assert!(dom.contains("data-region=\"SEV\""), "{dom}");
    assert!(dom.contains("data-seq=\"2\" data-state=\"gap\""), "the gap is shown: {dom}");
    assert!(dom.contains("quarantined DE_WES_RMC_20220730_00000001.DAT"), "the alert is shown: {dom}");
    let shot_arg = format!("--screenshot={}", shot.display());
    let out = browse(&[&shot_arg]);
    assert!(out.status.success(), "{}", common::describe(&out));
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a rendered page, {} bytes", png.len());
}

/// A service whose S3 endpoint accepts connections and never answers, with
/// `shutdown_timeout`.
fn service_on_a_hung_s3(shutdown_timeout: &str) -> (Service, tempfile::TempDir) {
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", blackhole.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in blackhole.incoming().map_while(Result::ok) {
            held.push(conn); // accepted, never answered
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "shutdown_timeout = \"{shutdown_timeout}\"\n{CONFIG}[s3]\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\nforce_path_style = true\n"
    );
    std::fs::write(dir.path().join("esr.toml"), config).unwrap();
    let env = [("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "s"), ("AWS_EC2_METADATA_DISABLED", "true")];
    let service = Service::start_with_env(dir.path(), &["--source", "s3://stalled/in/", "--store", "state.db"], &env);
    (service, dir)
}

/// [`service_on_a_hung_s3`] with a `/readyz` request hanging on the source (the health
/// server waits for requests in progress when it shuts down).
fn service_held_by_a_hung_request(shutdown_timeout: &str) -> (Service, tempfile::TempDir) {
    let (service, dir) = service_on_a_hung_s3(shutdown_timeout);
    let port = service.port;
    std::thread::spawn(move || common::service::get_text(port, "/readyz"));
    std::thread::sleep(Duration::from_millis(500));
    (service, dir)
}

fn signal(service: &Service, sig: i32) {
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(service.child.id() as i32, sig) }, 0);
}

fn wait_exit(service: &mut Service, limit: Duration) -> (std::process::ExitStatus, Duration) {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = service.child.try_wait().unwrap() {
            return (status, start.elapsed());
        }
        assert!(start.elapsed() < limit, "still running {limit:?} after the signal\n{}", service.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_exits_within_shutdown_timeout_even_when_something_hangs() {
    let (mut service, _dir) = service_held_by_a_hung_request("1s");
    signal(&service, libc::SIGTERM);
    let (status, took) = wait_exit(&mut service, Duration::from_secs(4));
    assert_eq!(status.code(), Some(1), "{}", service.log_text());
    assert!(took >= Duration::from_millis(900), "it waited for the shutdown first ({took:?})");
    std::thread::sleep(Duration::from_millis(200));
    assert!(service.log_text().contains("shutdown_timeout"), "{}", service.log_text());
}

#[test]
fn a_second_signal_exits_at_once() {
    let (mut service, _dir) = service_held_by_a_hung_request("60s");
    signal(&service, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(service.child.try_wait().unwrap().is_none(), "the hung request holds the first shutdown");
    signal(&service, libc::SIGTERM);
    let (status, _) = wait_exit(&mut service, Duration::from_secs(2));
    assert_eq!(status.code(), Some(130));
}

/// Logs written to a pipe or a file are plain text: no terminal colour codes.
#[test]
fn logs_to_a_pipe_are_plain_text() {
    let sb = common::Sandbox::new();
    sb.deliver(&esr_file("SEV", "RMC", "20220730", 1, &[por(1, "C", "Nurse")]));
    let out = sb.command(&["run", "--once"]).output().unwrap();
    assert!(out.status.success(), "{}", common::describe(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("file applied"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in a piped log: {log:?}");
}
