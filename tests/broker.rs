//! The pipeline through a real RabbitMQ broker (started by `scripts/test.sh`): parity
//! with the embedded mode, consumer crashes between write and ack, poison records and
//! their replay, and the refusal of a drifted topology.

mod common;

use common::broker::*;
use common::{Sandbox, count, describe};
use esr_ingest::adapters::sqlite::SqliteStore;
use esr_ingest::core::ledger::LedgerEntry;
use esr_ingest::core::name::{NameProfile, NameVerdict};
use esr_ingest::ports::store::Store;
use std::time::Duration;

fn sandbox(extra: &str) -> Sandbox {
    Sandbox::with_config(&broker_config(&amqp_url(), &unique("esr-test"), extra))
}

/// The store holds exactly `reference` (an embedded run's export), with `files` files
/// applied and each of `lines` lines counted exactly once.
fn assert_exactly_once(s: &Sandbox, reference: &[u8], files: u64, lines: u64, what: &str) {
    assert!(s.export_raw() == reference, "{what}: the export differs from the embedded one");
    let st = s.status_json();
    assert_eq!(count(&st, "applied_files"), files, "{what}: {st:#}");
    assert_eq!(
        count(&st, "records_applied") + count(&st, "records_stale") + count(&st, "records_unchanged"),
        lines,
        "{what}: every line counted exactly once: {st}"
    );
}

#[test]
fn the_broker_path_exports_what_the_embedded_mode_exports() {
    let inbox = tempfile::tempdir().unwrap();
    generate(inbox.path(), "SEV,WES,WMD", 4, 300, 7);
    for per_message in [1, 50] {
        let s = sandbox(&format!("records_per_message = {per_message}"));
        copy_inbox(inbox.path(), &s);
        s.run_once();
        assert_eq!(s.export_raw(), embedded_export(inbox.path()), "{per_message} record(s) per message");
        let status = s.status_json();
        assert_eq!(count(&status, "applied_files"), 12);
        assert_eq!(count(&status, "records_applied") + count(&status, "records_stale"), 3600);
        assert_eq!(status["in_flight"].as_array().map(Vec::len), Some(0), "{status}");
    }
}

#[test]
fn a_consumer_killed_between_store_write_and_ack_loses_and_doubles_nothing() {
    let inbox = tempfile::tempdir().unwrap();
    generate(inbox.path(), "SEV,WES", 2, 400, 11);
    let s = sandbox("records_per_message = 20");
    copy_inbox(inbox.path(), &s);
    let (mut child, log) = spawn_run_once(&s, &[("ESR_INGEST_FAULT", "consumer-exit-after-write")]);
    let status = wait_with_limit(&mut child, Duration::from_secs(120));
    assert_eq!(status.code(), Some(70), "the fault hook ends the process\n{}", log_text(&log));
    // The written-but-unacknowledged message comes back; its receipt makes it a no-op.
    s.run_once();
    assert_exactly_once(&s, &embedded_export(inbox.path()), 4, 1600, "after the clean run");
}

#[test]
fn a_poison_record_is_dead_lettered_then_replayed_after_the_fix() {
    let inbox = tempfile::tempdir().unwrap();
    generate(inbox.path(), "SEV", 2, 200, 3);
    let s = sandbox("records_per_message = 25");
    copy_inbox(inbox.path(), &s);
    s.run_ok(&["status"]); // creates the store
    let reference = embedded_export(inbox.path());
    let victim: serde_json::Value = serde_json::from_slice(reference.split(|b| *b == b'\n').nth(5).unwrap()).unwrap();
    let key = victim["key"].as_str().unwrap().to_string();
    // The store refuses that one record for good (as a constraint would).
    let db = rusqlite::Connection::open(&s.store).unwrap();
    db.execute_batch(&format!(
        "CREATE TRIGGER poison BEFORE INSERT ON records WHEN NEW.key = '{key}'
         BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END;"
    ))
    .unwrap();
    s.run_once();
    let st = s.status_json();
    assert!(count(&st, "records_dead_lettered") >= 1, "{st}");
    assert!(common::find_record(&s.export_lines(), victim["type"].as_str().unwrap(), &key).is_none());
    let list = s.run_ok(&["dlq", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let dead = listed["total"].as_u64().unwrap();
    assert!(dead >= 1, "{listed}");
    assert!(listed["messages"][0]["reason"].as_str().unwrap().contains("refused by a test trigger"), "{listed}");
    // Fix the cause, replay, and let the service apply it.
    db.execute_batch("DROP TRIGGER poison").unwrap();
    let replay = s.run_ok(&["dlq", "replay"]);
    assert!(
        String::from_utf8_lossy(&replay.stdout).contains(&format!("replayed {dead} message")),
        "{}",
        describe(&replay)
    );
    let mut service =
        s.command(&["run", "--listen", "127.0.0.1:0"]).stderr(std::process::Stdio::null()).spawn().unwrap();
    eventually("the replayed record", Duration::from_secs(60), || s.export_raw() == reference);
    let _ = std::process::Command::new("kill").arg("-TERM").arg(service.id().to_string()).status();
    assert!(service.wait().unwrap().success());
    let listed = s.run_ok(&["dlq", "list", "--json"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("\"total\": 0"));
}

#[test]
fn a_drifted_topology_is_refused_with_the_difference_named() {
    let names = unique("esr-drift");
    let first = Sandbox::with_config(&broker_config(&amqp_url(), &names, "delivery_limit = 5"));
    first.run_once(); // declares the queues
    let drifted = Sandbox::with_config(&broker_config(&amqp_url(), &names, "delivery_limit = 9"));
    let out = drifted.run(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(last.starts_with("esr-ingest: "), "the error is the last line: {err}");
    assert!(last.contains("x-delivery-limit") && last.contains("refusing to start"), "{err}");
}

#[test]
fn dlq_commands_need_a_broker_and_purge_needs_yes() {
    let plain = Sandbox::new();
    assert_eq!(plain.run(&["dlq", "list"]).status.code(), Some(2));
    let s = sandbox("");
    s.run_once();
    assert_eq!(s.run(&["dlq", "purge"]).status.code(), Some(2));
    let purged = s.run_ok(&["dlq", "purge", "--yes"]);
    assert!(String::from_utf8_lossy(&purged.stdout).contains("purged 0 message"));
}

/// A delivery stopped half-way (the process exits with part of the file confirmed), then
/// the object is replaced with other content: the new content is never mixed with what
/// was applied of the old one. It is a visible conflict; the old content uploaded again
/// finishes exactly as a clean run would.
#[test]
fn a_replaced_file_after_an_interrupted_delivery_is_a_conflict_not_a_mix() {
    let records = |title: &str, keys: std::ops::Range<u64>| -> Vec<String> {
        keys.map(|k| common::por(k, "C", &format!("{title} {k}"))).collect()
    };
    let original = common::esr_file("SEV", "RMC", "20220730", 1, &records("old", 1..2001));
    let s = sandbox("records_per_message = 1");
    let name = s.deliver(&original);
    let (mut child, log) = spawn_run_once(&s, &[("ESR_INGEST_FAULT", "publisher-exit-after-confirms:500")]);
    let status = wait_with_limit(&mut child, Duration::from_secs(120));
    assert_eq!(status.code(), Some(70), "the fault hook ends the process\n{}", log_text(&log));

    s.write_file(&name, common::esr_file("SEV", "RMC", "20220730", 1, &records("new", 1001..3001)).1);
    s.run_once();
    let st = s.status_json();
    let reason = common::quarantine_reason(&st, &name).unwrap_or_else(|| panic!("not quarantined: {st:#}"));
    assert!(reason.starts_with("conflict:"), "{reason}");
    let export = String::from_utf8(s.export_raw()).unwrap();
    assert!(!export.contains("\"new "), "records of the new content were applied");
    assert_eq!(common::next_seq(&st, "SEV"), Some(1), "the stream waits at the conflict: {st:#}");

    s.write_file(&name, &original.1);
    s.run_once();
    let reference = tempfile::tempdir().unwrap();
    std::fs::write(reference.path().join(&name), &original.1).unwrap();
    assert_eq!(s.export_raw(), embedded_export(reference.path()));
    let st = s.status_json();
    assert!(common::quarantined_files(&st).is_empty(), "{st:#}");
    assert_eq!(count(&st, "applied_files"), 1, "{st:#}");
    assert_eq!(
        count(&st, "records_applied") + count(&st, "records_stale") + count(&st, "records_unchanged"),
        2000,
        "every line counted exactly once: {st}"
    );
}

/// A backfill while files are still in flight (delivered, not yet applied by consumers)
/// leaves them to their first delivery: once the consumers run, every file and line is
/// counted exactly once.
#[test]
fn a_backfill_leaves_files_in_flight_to_their_first_delivery() {
    let inbox = tempfile::tempdir().unwrap();
    generate(inbox.path(), "SEV,WES", 2, 50, 5);
    let names = unique("esr-test");
    let s = Sandbox::with_config(&broker_config(&amqp_url(), &names, "consumers = 0"));
    copy_inbox(inbox.path(), &s);
    s.run_once();
    let st = s.status_json();
    assert_eq!(st["in_flight"].as_array().map(Vec::len), Some(4), "{st}");

    let out = s.run_ok(&["backfill", "--from", "2000-01-01", "--to", "2099-12-31"]);
    assert!(common::describe(&out).contains("in flight"), "{}", common::describe(&out));

    let config = s.config.as_ref().unwrap();
    std::fs::write(config, broker_config(&amqp_url(), &names, "consumers = 2")).unwrap();
    s.run_once();
    assert_eq!(s.export_raw(), embedded_export(inbox.path()));
    let st = s.status_json();
    assert_eq!(count(&st, "applied_files"), 4, "{st}");
    assert_eq!(count(&st, "records_applied") + count(&st, "records_stale"), 200, "{st}");
}

/// Runs `work` with a channel of its own to the broker.
fn with_channel(work: impl AsyncFnOnce(&lapin::Channel)) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await.unwrap();
        let channel = conn.create_channel().await.unwrap();
        work(&channel).await;
        let _ = channel.close(200, "done".into()).await;
    });
}

/// Takes every message out of the records queue of `names` (acknowledged: gone for good),
/// in queue order: its properties and its body.
fn take_messages(names: &str) -> Vec<(lapin::BasicProperties, Vec<u8>)> {
    use lapin::options::{BasicAckOptions, BasicGetOptions};
    let mut messages = Vec::new();
    with_channel(async |channel| {
        let queue = format!("{names}.q");
        while let Some(m) = channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false }).await.unwrap() {
            assert!(m.delivery.properties.message_id().is_some());
            messages.push((m.delivery.properties.clone(), m.delivery.data.clone()));
            m.delivery.ack(BasicAckOptions::default()).await.unwrap();
        }
    });
    messages
}

/// Publishes messages to the exchange of `names` as the service does (routing key
/// `records`).
fn publish_messages(names: &str, messages: &[(lapin::BasicProperties, Vec<u8>)]) {
    use lapin::options::BasicPublishOptions;
    with_channel(async |channel| {
        let exchange = format!("{names}.x");
        for (properties, body) in messages {
            let options = BasicPublishOptions::default();
            channel
                .basic_publish(exchange.as_str().into(), "records".into(), options, body, properties.clone())
                .await
                .unwrap();
        }
    });
}

/// The file a message belongs to, from its id (`FILE/GENERATION/FIRST_LINE`).
fn message_file(properties: &lapin::BasicProperties) -> String {
    let id = properties.message_id().as_ref().map(|id| id.to_string()).unwrap_or_default();
    id.split('/').next().unwrap_or_default().to_string()
}

/// Files published by a `run --once` with no consumers, and left in flight.
fn in_flight(days: u32, records: u64, extra: &str) -> (Sandbox, String) {
    let inbox = tempfile::tempdir().unwrap();
    generate(inbox.path(), "SEV", days, records, 5);
    let names = unique("esr-flight");
    let s = Sandbox::with_config(&broker_config(&amqp_url(), &names, &format!("consumers = 0\n{extra}")));
    copy_inbox(inbox.path(), &s);
    s.run_once();
    std::fs::write(s.config.as_ref().unwrap(), broker_config(&amqp_url(), &names, "consumers = 2")).unwrap();
    (s, names)
}

/// A message without a message id cannot be applied exactly once (its receipt would be
/// every such message's): it is dead-lettered with that reason, never acknowledged unread.
#[test]
fn messages_without_a_message_id_are_dead_lettered() {
    let (s, names) = in_flight(1, 4, "records_per_message = 2");
    let messages = take_messages(&names);
    assert_eq!(messages.len(), 2, "the file's two messages");
    let without_ids: Vec<_> =
        messages.into_iter().map(|(_, body)| (lapin::BasicProperties::default().with_delivery_mode(2), body)).collect();
    publish_messages(&names, &without_ids);
    let mut service =
        s.command(&["run", "--listen", "127.0.0.1:0"]).stderr(std::process::Stdio::null()).spawn().unwrap();
    let dead = || {
        let list = s.run_ok(&["dlq", "list", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&list.stdout).unwrap_or_default()
    };
    eventually("both messages dead-lettered", Duration::from_secs(60), || dead()["total"] == 2);
    let _ = std::process::Command::new("kill").arg("-TERM").arg(service.id().to_string()).status();
    assert!(service.wait().unwrap().success());
    let listed = dead();
    for m in listed["messages"].as_array().unwrap() {
        assert!(m["reason"].as_str().unwrap_or_default().contains("no message id"), "{listed}");
    }
    assert_eq!(count(&s.status_json(), "records_applied"), 0, "nothing applied without an id");
}

/// A shutdown request while `run --once` waits for files in flight ends it at once, saying
/// so (not after the stall limit, with a stall's error).
#[test]
fn a_shutdown_while_draining_ends_the_run_at_once() {
    let (s, names) = in_flight(1, 4, "");
    assert_eq!(take_messages(&names).len(), 1, "the file's message, gone: the file stays in flight");
    let (mut child, log) = spawn_run_once(&s, &[]);
    std::thread::sleep(Duration::from_secs(3)); // the pass is over; the drain waits
    let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let status = wait_with_limit(&mut child, Duration::from_secs(20));
    let text = log_text(&log);
    assert!(!status.success(), "{text}");
    assert!(text.contains("stopped by a shutdown request with files in flight"), "{text}");
}

/// A region's ready files go out as one unit (one intent commit, one channel, one commit),
/// each file's messages under its own id and headers; the unit ends before a file with a
/// file-level fault, and nothing of that file or of any file after it is published.
#[test]
fn a_region_s_ready_files_go_out_together_and_nothing_of_a_faulty_file() {
    let names = unique("esr-unit");
    let s = Sandbox::with_config(&broker_config(&amqp_url(), &names, "consumers = 0\nrecords_per_message = 2"));
    let file =
        |seq: u32, records: &[String]| common::esr_file("SEV", "RMC", &format!("202207{}", 20 + seq), seq, records);
    let mut reference = Vec::new();
    for seq in 1..=3 {
        let records: Vec<String> =
            (1..=3).map(|k| common::por(k + u64::from(seq), "C", &format!("v{seq} {k}"))).collect();
        reference.push(file(seq, &records));
        s.deliver(reference.last().unwrap());
    }
    let (bad, content) = file(4, &[common::por(1, "C", "bad")]);
    s.write_file(&bad, content.replace("TRL,1", "TRL,5"));
    s.deliver(&file(5, &[common::por(1, "C", "after the fault")]));

    let out = s.run_once();
    let log = describe(&out);
    // The first file of a pass goes alone; the two after it together.
    assert_eq!(log.matches("together=2").count(), 2, "{log}");
    let messages = take_messages(&names);
    let mut per_file = std::collections::BTreeMap::<String, usize>::new();
    for (properties, body) in &messages {
        let message: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(message["file"].as_str(), Some(message_file(properties).as_str()), "{message}");
        *per_file.entry(message_file(properties)).or_default() += 1;
    }
    let expected: std::collections::BTreeMap<String, usize> = reference.iter().map(|(n, _)| (n.clone(), 2)).collect();
    assert_eq!(per_file, expected, "two messages of each good file, nothing of {bad} or after it");
    let st = s.status_json();
    assert!(common::quarantine_reason(&st, &bad).is_some(), "{st:#}");
    assert_eq!(common::next_seq(&st, "SEV"), Some(4), "{st:#}");

    // The consumers apply what was published: the three files, exactly as embedded.
    std::fs::write(s.config.as_ref().unwrap(), broker_config(&amqp_url(), &names, "consumers = 2")).unwrap();
    publish_messages(&names, &messages);
    s.run_once();
    let good = tempfile::tempdir().unwrap();
    for (name, content) in &reference {
        std::fs::write(good.path().join(name), content).unwrap();
    }
    assert_eq!(s.export_raw(), embedded_export(good.path()));
    let st = s.status_json();
    assert_eq!(count(&st, "applied_files"), 3, "{st:#}");
    assert_eq!(count(&st, "records_applied") + count(&st, "records_stale"), 9, "{st:#}");
}

/// A publisher stopped inside a unit, with one of its files confirmed and not committed
/// and the next one half-way: the next run resumes each file, every line counted exactly
/// once, and the result is the embedded one.
#[test]
fn a_publisher_stopped_inside_a_unit_resumes_each_file_exactly_once() {
    let inbox = tempfile::tempdir().unwrap();
    generate(inbox.path(), "SEV", 4, 300, 13);
    let s = sandbox("records_per_message = 10");
    copy_inbox(inbox.path(), &s);
    // 30 messages a file: the first file goes alone and is committed; the unit of the
    // other three stops half-way through its second file.
    let (mut child, log) = spawn_run_once(&s, &[("ESR_INGEST_FAULT", "publisher-exit-after-confirms:75")]);
    let status = wait_with_limit(&mut child, Duration::from_secs(120));
    assert_eq!(status.code(), Some(70), "the fault hook ends the process\n{}", log_text(&log));
    assert_eq!(log_text(&log).matches("together=").count(), 1, "only the first file committed\n{}", log_text(&log));

    let names = names_by_seq(inbox.path());
    let first: Vec<u32> = names[1..3].iter().map(|n| ledger_entry(&s, n).generation).collect();

    s.run_once();
    assert_exactly_once(&s, &embedded_export(inbox.path()), 4, 1200, "after the clean run");
    for (name, generation) in names[1..3].iter().zip(first) {
        assert_resumed_under(&s, name, generation, 300);
    }
}

/// A shutdown half-way through a unit's file (its pump sees the cancellation between two
/// chunks) commits the files the unit settled before it; the next start resumes only the
/// cut file, under its first generation.
#[test]
fn a_shutdown_inside_a_unit_s_file_commits_the_files_settled_before_it() {
    // 120 messages a file, 8 in flight, so confirms come while a file is still being
    // published: the first file goes alone; the shutdown lands in the unit's second file.
    let (inbox, names, s) = stopped_inside_a_unit(1200, "records_per_message = 10\nin_flight = 8", 120 + 120 + 20);
    let st = s.status_json();
    assert_eq!(common::next_seq(&st, "SEV"), Some(seq_of(&names[2])), "the stream is at the cut file: {st:#}");
    let cut = ledger_entry(&s, &names[2]);
    let counted = with_store(&s, |store| async move { store.delivery_progress(&cut.name, cut.generation).await });
    assert!(counted.unwrap().total() < 1200, "the cut file was not whole at the consumers");

    s.run_once();
    assert_exactly_once(&s, &embedded_export(inbox.path()), 4, 4800, "after the next start");
    let first = ledger_entry(&s, &names[1]).generation;
    assert_resumed_under(&s, &names[1], first, 1200); // committed before the shutdown, not sent again
    assert_resumed_under(&s, &names[2], cut.generation, 1200);
}

/// A unit's file that fails while the shutdown is under way (its delivery gives up after
/// the SIGTERM): the files the unit settled before it are committed all the same, so the
/// next start does not send them again.
#[test]
fn a_file_failing_at_a_shutdown_still_commits_the_files_settled_before_it() {
    let extra = "records_per_message = 10\nin_flight = 8";
    let hook = "publisher-stop-then-fail-after-confirms";
    let (inbox, names, s) = stopped_inside_a_unit_by(hook, 1200, extra, 120 + 120 + 20);
    let st = s.status_json();
    assert_eq!(common::next_seq(&st, "SEV"), Some(seq_of(&names[2])), "the stream is at the failed file: {st:#}");

    s.run_once();
    assert_exactly_once(&s, &embedded_export(inbox.path()), 4, 4800, "after the next start");
    let first = ledger_entry(&s, &names[1]).generation;
    assert_resumed_under(&s, &names[1], first, 1200); // committed at the shutdown, not sent again
}

/// A shutdown between two files of a unit (the next file's intent not yet written)
/// commits every file the unit settled.
#[test]
fn a_shutdown_between_a_unit_s_files_commits_the_files_it_settled() {
    // 30 messages a file, all published before the first confirm: the hook fires while
    // the unit's second file settles, and the shutdown is seen at the third file's intent.
    let (inbox, names, s) = stopped_inside_a_unit(300, "records_per_message = 10", 30 + 30 + 15);
    let st = s.status_json();
    assert_eq!(common::next_seq(&st, "SEV"), Some(seq_of(&names[3])), "the stream is past the settled files: {st:#}");

    s.run_once();
    assert_exactly_once(&s, &embedded_export(inbox.path()), 4, 1200, "after the next start");
}

/// Four files of SEV with `lines` records each, run once with a SIGTERM at the `stop_at`th
/// confirm; asserts the shutdown committed what the unit settled, in time.
fn stopped_inside_a_unit(lines: u64, extra: &str, stop_at: u64) -> (tempfile::TempDir, Vec<String>, Sandbox) {
    stopped_inside_a_unit_by("publisher-stop-after-confirms", lines, extra, stop_at)
}

/// [`stopped_inside_a_unit`] with the test hook `hook` (one of the publisher's
/// `…-after-confirms` hooks that sends the SIGTERM).
fn stopped_inside_a_unit_by(
    hook: &str,
    lines: u64,
    extra: &str,
    stop_at: u64,
) -> (tempfile::TempDir, Vec<String>, Sandbox) {
    let inbox = tempfile::tempdir().unwrap();
    generate(inbox.path(), "SEV", 4, lines, 17);
    let names = names_by_seq(inbox.path());
    let s = sandbox(extra);
    copy_inbox(inbox.path(), &s);
    let hook = format!("{hook}:{stop_at}");
    let out = s.command(&["run", "--once"]).env("ESR_INGEST_FAULT", hook).output().unwrap();
    let log = describe(&out);
    assert!(log.contains("committing the files it settled"), "{log}");
    assert!(!log.contains("passed before the shutdown finished"), "the shutdown finished in time: {log}");
    (inbox, names, s)
}

/// The SEQ of a file name, as the name profile reads it.
fn seq_of(name: &str) -> u64 {
    match NameProfile::default().classify(name) {
        NameVerdict::Batch(file) => file.seq,
        other => panic!("{name} is not a batch file name: {other:?}"),
    }
}

/// Faults at every port (calls failing before they take effect, or after it with the
/// reply lost) while units of files go out: the files settled before a failure are
/// committed, the others resume alone, and a clean run then leaves exactly the embedded
/// result, every line counted once.
#[test]
fn faults_inside_units_lose_and_double_nothing() {
    let inbox = tempfile::tempdir().unwrap();
    generate(inbox.path(), "SEV,WES", 5, 60, 17);
    let reference = embedded_export(inbox.path());
    for seed in 1..=3 {
        let s = sandbox("records_per_message = 10");
        copy_inbox(inbox.path(), &s);
        for round in 0..2 {
            let faults = format!("seed={},rate=0.15,kinds=before+after", seed * 10 + round);
            let out = s.command(&["run", "--once"]).env("ESR_INGEST_FAULTS", &faults).output().unwrap();
            assert!(matches!(out.status.code(), Some(0 | 1)), "with faults {faults}:\n{}", describe(&out));
            assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{}", describe(&out));
        }
        s.run_once();
        assert_exactly_once(&s, &reference, 10, 600, &format!("seed {seed}"));
    }
}

/// A unit whose delivery fails half-way, the process going on: the files settled before
/// the failure are committed (the stream moves past them), the region waits, and the
/// next run resumes the rest, every line counted once.
#[test]
fn a_unit_that_fails_half_way_commits_what_it_settled() {
    let inbox = tempfile::tempdir().unwrap();
    generate(inbox.path(), "SEV", 4, 300, 19);
    let names = names_by_seq(inbox.path());
    let s = sandbox("records_per_message = 10");
    copy_inbox(inbox.path(), &s);
    // 30 messages a file: the first file goes alone; the unit of the other three fails in
    // its second file, once its first is settled.
    let out =
        s.command(&["run", "--once"]).env("ESR_INGEST_FAULT", "publisher-fail-after-confirms:75").output().unwrap();
    let log = describe(&out);
    assert_eq!(out.status.code(), Some(1), "the failed file is deferred\n{log}");
    assert!(log.contains("the files settled before it are committed"), "{log}");
    let st = s.status_json();
    assert_eq!(common::next_seq(&st, "SEV"), Some(seq_of(&names[2])), "the stream is past the settled files: {st:#}");

    let first = ledger_entry(&s, &names[2]).generation;

    s.run_once();
    assert_exactly_once(&s, &embedded_export(inbox.path()), 4, 1200, "after the clean run");
    assert_resumed_under(&s, &names[2], first, 300);
}

/// The files of `inbox` in SEQ order.
fn names_by_seq(inbox: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(inbox).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort_by_key(|n| seq_of(n));
    names
}

/// A file interrupted after its intent resumed under the generation of its first attempt:
/// its consumers counted every line under that generation (the messages published before
/// the interruption recognised by their receipts) and nothing under a later one. A resume
/// under a new generation would count each line once too (as unchanged), so only the
/// receipts tell.
fn assert_resumed_under(s: &Sandbox, file: &str, generation: u32, lines: u64) {
    assert_eq!(ledger_entry(s, file).generation, generation, "{file} resumed under its first generation");
    let (first, later) = with_store(s, |store| async move {
        let first = store.delivery_progress(file, generation).await.unwrap();
        (first, store.delivery_progress(file, generation + 1).await.unwrap())
    });
    assert_eq!(first.total(), lines, "{file}: every line counted under generation {generation}: {first:?}");
    assert_eq!(later.total(), 0, "{file}: nothing delivered under a later generation: {later:?}");
}

/// The store's ledger entry of `file` (read once every process has closed the store).
fn ledger_entry(s: &Sandbox, file: &str) -> LedgerEntry {
    with_store(s, |store| async move {
        let snapshot = store.snapshot().await.unwrap();
        snapshot.ledger.into_iter().find(|e| e.name == file).expect("the file is in the ledger")
    })
}

fn with_store<T, F: Future<Output = T>>(s: &Sandbox, read: impl FnOnce(SqliteStore) -> F) -> T {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(&s.store).await.unwrap();
        read(store).await
    })
}
