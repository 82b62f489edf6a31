//! Alert notifications through a Slack-compatible webhook served by the test: one
//! message per transition (raised, resolved), retried after a failure, never repeated
//! while the condition holds, nor after a restart.

mod common;

use common::service::Service;
use common::webhook::Receiver;
use common::{esr_file, por};
use std::time::Duration;

#[test]
fn one_message_per_transition_retried_and_never_repeated() {
    let hook = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    for seq in [1, 3] {
        let (name, text) = esr_file("SEV", "RMC", "20220730", seq, &[por(u64::from(seq), "C", "Nurse")]);
        std::fs::write(inbox.join(name), text).unwrap();
    }
    std::fs::write(inbox.join("DE_WES_RMC_20220730_00000001.DAT"), "HDR,RMC,WES,20220730,00000001\nTRL,5\n").unwrap();
    let config = format!(
        "poll_interval = \"200ms\"\ngap_alert_after = \"1s\"\n[health]\nlisten = \"127.0.0.1:0\"\n\
         [alerts]\nwebhook_url = \"{}\"\n",
        hook.url
    );
    std::fs::write(dir.path().join("esr.toml"), config).unwrap();
    let args = ["--source", "inbox", "--store", "state.db"];

    let service = Service::start(dir.path(), &args);
    let mut got = hook.wait_for(3, Duration::from_secs(60));
    got.sort();
    assert!(got[0].starts_with("[esr-ingest] ALERT gap/SEV: SEV: waiting for missing SEQ 2"), "{got:?}");
    assert!(got[1].starts_with("[esr-ingest] ALERT gap/WES: WES: waiting for quarantined SEQ 1"), "{got:?}");
    assert!(got[2].starts_with("[esr-ingest] ALERT quarantine/DE_WES_RMC_20220730_00000001.DAT"), "{got:?}");
    assert_eq!(*hook.refused.lock().unwrap(), 1, "the first attempt failed and was retried");
    std::thread::sleep(Duration::from_secs(3)); // ~15 passes while both conditions hold
    assert_eq!(hook.messages().len(), 3, "no repeats while the conditions hold: {:?}", hook.messages());
    assert!(!service.log_text().contains("secret"), "the webhook's secret path is never logged");

    // the gap closes: one resolution
    let (name, text) = esr_file("SEV", "RMC", "20220730", 2, &[por(2, "C", "Nurse")]);
    std::fs::write(inbox.join(name), text).unwrap();
    let got = hook.wait_for(4, Duration::from_secs(30));
    assert!(got[3].starts_with("[esr-ingest] RESOLVED gap/SEV"), "{got:?}");

    // a restart remembers what was sent
    drop(service);
    let _again = Service::start(dir.path(), &args);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(hook.messages().len(), 4, "nothing is sent again after a restart: {:?}", hook.messages());
}
