//! Absence alerts with a clock the test moves: a region whose expected file has not come
//! by its deadline is flagged `late_alert` in the status document, and a file clears it.

mod common;

use chrono::{DateTime, Utc};
use esr_ingest::config::{ConfigFile, Overrides, Settings};
use esr_ingest::engine::Clock;
use esr_ingest::engine::status::collect;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tokio_util::sync::CancellationToken;

/// A clock the test sets.
struct ManualClock(AtomicI64);

impl ManualClock {
    fn set(&self, t: DateTime<Utc>) {
        self.0.store(t.timestamp_millis(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.0.load(Ordering::SeqCst)).expect("a valid instant")
    }
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn drop_file(inbox: &std::path::Path, seq: u64, date: &str) {
    let name = format!("DE_SEV_RMC_{date}_{seq:08}.DAT");
    let text = common::file_text("SEV", "RMC", date, seq, &[common::por(seq, "C", "Nurse")]);
    std::fs::write(inbox.join(name), text).unwrap();
}

#[tokio::test]
async fn a_missed_deadline_raises_late_alert_and_the_file_clears_it() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let config: ConfigFile = toml::from_str(
        "[[expect]]\nregions = [\"SEV\", \"WES\"]\ndays = [\"weekdays\"]\nby = \"14:30\"\ntimezone = \"Europe/London\"\n",
    )
    .unwrap();
    let settings = Settings::from_file(config, Overrides::default()).unwrap();
    let rules = settings.status_rules();
    let clock = Arc::new(ManualClock(AtomicI64::new(0)));
    let mut engine = common::engine::embedded_engine(&inbox, &dir.path().join("esr.db")).await;
    engine.clock = clock.clone();
    let cancel = CancellationToken::new();

    // Monday 1 August 2022, 09:00 in London (BST): Monday's file comes.
    clock.set(utc("2022-08-01T08:00:00Z"));
    drop_file(&inbox, 1, "20220801");
    engine.pass(&cancel).await.unwrap();

    let at = |t: &str| {
        let (store, rules) = (engine.store.clone(), rules.clone());
        let t = utc(t);
        async move {
            let doc = collect(store.as_ref(), &rules, t).await.unwrap();
            let json = serde_json::to_value(&doc).unwrap();
            let streams = json["streams"].as_array().unwrap().clone();
            let find = |r: &str| streams.iter().find(|s| s["region"] == r).cloned().unwrap();
            (find("SEV"), find("WES"))
        }
    };

    let (sev, wes) = at("2022-08-02T13:29:00Z").await;
    assert_eq!(sev["late_alert"], false, "{sev}");
    assert_eq!(sev["expected_by"], "2022-08-02T13:30:00Z", "14:30 London is 13:30 UTC in summer");
    assert_eq!(sev["last_file_at"], "2022-08-01T08:00:00Z");
    assert_eq!(wes["late_alert"], true, "a named region that never sent a file is late: {wes}");
    assert!(wes["next_seq"].is_null());

    // The deadline passes with no Tuesday file.
    let (sev, _) = at("2022-08-02T13:31:00Z").await;
    assert_eq!(sev["late_alert"], true, "{sev}");
    assert_eq!(sev["late_since"], "2022-08-02T13:30:00Z");
    assert_eq!(sev["gap_alert"], false, "late is about absence, not about a gap");

    // The file comes an hour late: the alert clears.
    clock.set(utc("2022-08-02T14:30:00Z"));
    drop_file(&inbox, 2, "20220802");
    engine.pass(&cancel).await.unwrap();
    let (sev, _) = at("2022-08-02T14:31:00Z").await;
    assert_eq!(sev["late_alert"], false, "{sev}");
    assert!(sev["late_since"].is_null());

    // The weekend has no deadlines; Monday's does.
    let (sev, _) = at("2022-08-07T12:00:00Z").await;
    assert_eq!(sev["late_alert"], true, "Wednesday to Friday passed without files: {sev}");
    assert_eq!(sev["late_since"], "2022-08-05T13:30:00Z");
}
