//! The files under `deploy/` are what an operator applies: they must parse, agree with
//! the service (probe paths and port, the config the ConfigMap carries, the shutdown
//! grace), and every metric the alert rules and the dashboard query must be one the
//! service exposes. `promtool` checks the rules' PromQL.

mod common;

use esr_ingest::engine::status::{StatusCounts, StatusDoc, StreamStatus};
use esr_ingest::health::prometheus::{self, BrokerGauges};
use esr_ingest::ports::RetryCause;
use esr_ingest::telemetry::metrics;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn deploy(path: &str) -> PathBuf {
    common::project_root().join("deploy").join(path)
}

/// Every YAML document of a file, as JSON values.
fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|d| {
            let v: serde_norway::Value = serde::Deserialize::deserialize(d)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
            serde_json::to_value(v).expect("YAML as JSON")
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The names of every metric family the service renders, with each kind exercised.
fn exposed_metric_names() -> BTreeSet<String> {
    metrics::install();
    metrics::pass_finished(true, chrono::Utc::now());
    metrics::pass_finished(false, chrono::Utc::now());
    metrics::file_processed("applied", 1);
    metrics::confirms("ack", 1);
    metrics::retry(RetryCause::StoreBusy);
    metrics::consumed("acked", 1);
    metrics::notification("sent");
    metrics::regions_owned(1);
    metrics::broker_blocked("esr-ingest publisher", false);
    let stream = StreamStatus {
        region: "SEV".into(),
        next_seq: Some(2),
        held: vec![3],
        waiting_since: Some("2022-08-01T00:00:00Z".into()),
        gap_alert: true,
        waiting_for: Some("missing SEQ 2".into()),
        last_applied_seq: Some(1),
        skipped: vec![],
        last_file_at: Some("2022-08-01T00:00:00Z".into()),
        late_alert: false,
        late_since: None,
        expected_by: None,
    };
    let doc = StatusDoc {
        generated_at: "2022-08-02T00:00:00Z".into(),
        streams: vec![stream],
        quarantined: vec![],
        in_flight: vec![],
        counts: StatusCounts { totals: Default::default(), quarantined_files: 0, pending_files: 1 },
        recent_actions: vec![],
        leases: vec![],
    };
    let broker = BrokerGauges { reachable: true, dead_letter_depth: Some(0) };
    let text = prometheus::render(Some(&doc), Some(&broker), chrono::Utc::now());
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

/// The `esr_ingest_*` names a query text uses (a counter's `_total` included).
fn referenced(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"esr_ingest_[a-z_]+").unwrap();
    re.find_iter(text).map(|m| m.as_str().to_string()).collect()
}

fn assert_known(what: &str, text: &str, known: &BTreeSet<String>) {
    let unknown: Vec<_> = referenced(text).into_iter().filter(|n| !known.contains(n)).collect();
    assert!(unknown.is_empty(), "{what} queries metrics the service does not expose: {unknown:?}\nexposed: {known:?}");
}

#[test]
fn kubernetes_manifests_match_the_service() {
    let kustomization = &yaml_documents(&deploy("kubernetes/kustomization.yaml"))[0];
    let mut kinds = BTreeSet::new();
    let mut all = Vec::new();
    for resource in kustomization["resources"].as_array().unwrap() {
        for doc in yaml_documents(&deploy(&format!("kubernetes/{}", resource.as_str().unwrap()))) {
            assert!(doc["apiVersion"].is_string() && doc["metadata"]["name"].is_string(), "{doc}");
            kinds.insert(doc["kind"].as_str().unwrap().to_string());
            all.push(doc);
        }
    }
    for kind in ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget"] {
        assert!(kinds.contains(kind), "no {kind} in the kustomization");
    }
    let secret = &yaml_documents(&deploy("kubernetes/secret.example.yaml"))[0];
    assert_eq!(secret["kind"], "Secret");

    let config_map = all.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let toml_text = config_map["data"].as_object().unwrap().values().next().unwrap().as_str().unwrap();
    let file: esr_ingest::config::ConfigFile =
        toml::from_str(toml_text).unwrap_or_else(|e| panic!("the ConfigMap's config does not load: {e}"));
    let overrides = esr_ingest::config::Overrides {
        store: Some("mongodb://db.example:27017/esr".into()),
        broker: Some("amqp://mq.example:5672/%2f".into()),
        ..Default::default()
    };
    let settings = esr_ingest::config::Settings::from_file(file, overrides).expect("valid settings");

    let deployment = all.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let port = container["ports"][0]["containerPort"].as_u64().unwrap();
    assert_eq!(port, u64::from(settings.health_listen.port()), "the probes reach the health server");
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(grace > settings.shutdown_timeout.as_secs(), "SIGKILL comes only after shutdown_timeout");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(args.last(), Some(&"run"));
}

#[test]
fn alert_rules_and_dashboard_use_exposed_metrics() {
    let known = exposed_metric_names();
    let rules = &yaml_documents(&deploy("prometheus/alerts.yaml"))[0];
    let mut count = 0;
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            count += 1;
            let name = rule["alert"].as_str().expect("every rule is an alert");
            assert!(rule["labels"]["severity"].is_string(), "{name}: severity");
            assert!(
                rule["annotations"]["summary"].is_string() && rule["annotations"]["description"].is_string(),
                "{name}"
            );
            assert_known(name, rule["expr"].as_str().unwrap(), &known);
        }
    }
    assert!(count >= 10, "{count} rules");
    for needed in [
        "esr_ingest_gap_alert",
        "esr_ingest_late_alert",
        "esr_ingest_dlq_messages",
        "esr_ingest_last_discovery_timestamp_seconds",
    ] {
        let used = rules.to_string().contains(needed);
        assert!(used, "no alert on {needed}");
    }

    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(deploy("grafana/esr-ingest.json")).unwrap())
        .expect("the dashboard is valid JSON");
    assert_eq!(dashboard["uid"], "esr-ingest");
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "{title}: duplicate panel id");
        assert!(panel["gridPos"]["w"].is_u64(), "{title}: gridPos");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no queries");
        for t in targets {
            assert!(t["refId"].is_string(), "{title}: refId");
            assert_known(title, t["expr"].as_str().unwrap(), &known);
        }
    }
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(deploy("prometheus/alerts.yaml"))
        .output()
        .expect("promtool is not installed: run the tests with scripts/test.sh, which installs it");
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn compose_file_parses() {
    let compose = &yaml_documents(&deploy("compose.yaml"))[0];
    assert!(compose["services"]["esr-ingest"].is_object(), "{compose}");
}
