//! End to end through the production adapters on loopback: files uploaded to an
//! S3-compatible server in a shuffled order, published through RabbitMQ, applied by the
//! consumers to the MongoDB-wire store — and exported byte for byte like the embedded
//! mode exports the same files.

mod common;

use common::broker::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use std::process::Command;

fn s3_endpoint() -> String {
    std::env::var("ESR_TEST_S3_ENDPOINT")
        .expect("ESR_TEST_S3_ENDPOINT is not set: run the tests with scripts/test.sh, which starts the servers")
}

async fn upload_shuffled(bucket: &str, prefix: &str, files: &[std::path::PathBuf], seed: u64) {
    let client = s3_client().await;
    client.create_bucket().bucket(bucket).send().await.expect("create the bucket");
    let mut order = files.to_vec();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    for path in &order {
        let key = format!("{prefix}{}", path.file_name().unwrap().to_str().unwrap());
        let body = std::fs::read(path).unwrap();
        client.put_object().bucket(bucket).key(key).body(body.into()).send().await.expect("upload");
    }
}

/// The S3 client of the test server.
async fn s3_client() -> aws_sdk_s3::Client {
    let settings = esr_ingest::adapters::s3::S3Settings {
        endpoint: Some(s3_endpoint()),
        region: Some("us-east-1".into()),
        force_path_style: true,
    };
    esr_ingest::adapters::s3::client(&settings).await
}

/// An empty bucket and a fanout exchange of S3 event notifications, with the config of a
/// service that reads the bucket's `in/` prefix and listens to the exchange (through the
/// queue `NAMES.events`), its full listing an hour away.
struct EventsRig {
    bucket: String,
    exchange: String,
    channel: lapin::Channel,
    _connection: lapin::Connection,
    client: aws_sdk_s3::Client,
    config: String,
}

impl EventsRig {
    async fn new(names: &str) -> Self {
        use lapin::options::ExchangeDeclareOptions;
        let bucket = unique(names).to_lowercase();
        upload_shuffled(&bucket, "in/", &[], 1).await;
        let exchange = format!("{names}.s3-events");
        let connection = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        let kind = lapin::ExchangeKind::Fanout;
        let no_arguments = lapin::types::FieldTable::default();
        channel.exchange_declare(exchange.as_str().into(), kind, durable, no_arguments).await.unwrap();
        let config = format!(
            "{}[s3]\nendpoint = \"{}\"\nregion = \"us-east-1\"\nforce_path_style = true\nevents_queue = \"{names}.events\"\n\
             events_exchange = \"{exchange}\"\nreconcile_interval = \"1h\"\n",
            broker_config(&amqp_url(), names, ""),
            s3_endpoint()
        );
        Self { bucket, exchange, channel, _connection: connection, client: s3_client().await, config }
    }

    /// The `s3://` source of the service.
    fn source(&self) -> String {
        format!("s3://{}/in/", self.bucket)
    }

    /// Uploads SEV's file of SEQ `seq` (one record, dated August `seq`); returns its name.
    async fn upload(&self, seq: u64) -> String {
        let name = format!("DE_SEV_RMC_202208{seq:02}_{seq:08}.DAT");
        let body = format!(
            "HDR,RMC,SEV,202208{seq:02},{seq:08}\nPOR,{seq},,C,42,Staff Nurse,DPN1,SEV,Y,RA7,1234,Org,Loc\nTRL,1\n"
        );
        let key = format!("in/{name}");
        self.client.put_object().bucket(&self.bucket).key(key).body(body.into_bytes().into()).send().await.unwrap();
        name
    }

    /// Publishes the notification of `name`'s upload, as MinIO would.
    async fn announce(&self, name: &str) {
        announce(&self.channel, &self.exchange, &self.bucket, name).await;
    }
}

/// Publishes the notification of the upload of `in/NAME` to `bucket`, as MinIO would, to
/// `exchange`.
async fn announce(channel: &lapin::Channel, exchange: &str, bucket: &str, name: &str) {
    let event = serde_json::json!({
        "EventName": "s3:ObjectCreated:Put",
        "Key": format!("{bucket}/in/{name}"),
        "Records": [{
            "eventVersion": "2.0", "eventSource": "minio:s3", "eventName": "s3:ObjectCreated:Put",
            "s3": {"bucket": {"name": bucket}, "object": {"key": format!("in%2F{name}"), "size": 100}}
        }]
    });
    let (options, properties) = (lapin::options::BasicPublishOptions::default(), lapin::BasicProperties::default());
    let body = event.to_string();
    channel.basic_publish(exchange.into(), "".into(), options, body.as_bytes(), properties).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_to_rabbitmq_to_mongodb_exports_what_the_embedded_mode_exports() {
    let work = tempfile::tempdir().unwrap();
    let inbox = work.path().join("inbox");
    let spec = esr_ingest::generate::GenerateSpec {
        regions: esr_ingest::generate::DEFAULT_REGIONS.iter().map(|r| r.to_string()).collect(),
        days: 10,
        start: chrono::NaiveDate::from_ymd_opt(2022, 7, 29).unwrap(),
        records: 1000,
        seed: 2022,
    };
    let files = esr_ingest::generate::generate(&inbox, &spec).unwrap();
    assert_eq!(files.len(), 130);
    let bucket = unique("esr-e2e").to_lowercase();
    upload_shuffled(&bucket, "drop/", &files, 17).await;

    let names = unique("esr-e2e");
    let config = format!(
        "{}[s3]\nendpoint = \"{}\"\nregion = \"us-east-1\"\nforce_path_style = true\n",
        broker_config(&amqp_url(), &names, "records_per_message = 100\nconsumers = 2"),
        s3_endpoint()
    );
    std::fs::write(work.path().join("esr.toml"), config).unwrap();
    let store = format!("{}/{}", mongo_uri().trim_end_matches('/'), names.replace('-', "_"));
    let source = format!("s3://{bucket}/drop/");
    let dir = work.path().to_path_buf();
    let cli = move |args: &[&str]| {
        let out = Command::new(common::bin())
            .current_dir(&dir)
            .args(["--config", "esr.toml", "--source", &source, "--store", &store])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "esr-ingest {args:?}\n{}", common::describe(&out));
        out.stdout
    };
    let inbox_for_blocking = inbox.clone();
    let embedded = tokio::task::spawn_blocking(move || embedded_export(&inbox_for_blocking)).await.unwrap();
    let produced = tokio::task::spawn_blocking(move || {
        cli(&["run", "--once"]);
        let status: serde_json::Value = serde_json::from_slice(&cli(&["status", "--json"])).unwrap();
        (cli(&["export"]), status)
    })
    .await
    .unwrap();
    let (export, status) = produced;
    assert_eq!(status["counts"]["applied_files"], 130, "{status:#}");
    assert_eq!(status["in_flight"].as_array().map(Vec::len), Some(0));
    assert_eq!(export.len(), embedded.len(), "export sizes");
    assert!(export == embedded, "the production path's export differs from the embedded export");
}

/// With `[s3] events_queue`, an S3 event notification (MinIO's JSON shape, published to
/// the broker as MinIO would) starts a pass over the keys it names at once, while the
/// full listing runs only every `reconcile_interval` (an hour here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_event_notification_starts_work_within_seconds() {
    let work = tempfile::tempdir().unwrap();
    let rig = EventsRig::new(&unique("esr-events")).await;
    std::fs::write(work.path().join("esr.toml"), &rig.config).unwrap();
    let source = rig.source();
    let store = work.path().join("s.db");
    let base = |args: &[&str]| {
        let mut c = Command::new(common::bin());
        c.current_dir(work.path())
            .args(["--config", "esr.toml", "--source", &source, "--store"])
            .arg(&store)
            .args(args);
        c
    };
    let log = work.path().join("run.log");
    let service = base(&["run", "--listen", "127.0.0.1:0"])
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut service = common::KillOnDrop(service); // no service outlives a failed assertion
    eventually("the events listener", std::time::Duration::from_secs(30), || {
        log_text(&log).contains("listening for S3 event notifications")
    });
    std::thread::sleep(std::time::Duration::from_secs(1)); // the first (empty) pass is over

    let status = || {
        let out = base(&["status", "--json"]).output().unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    let first = rig.upload(1).await;
    let sent = std::time::Instant::now();
    rig.announce(&first).await;
    let applied = |n: u64| move || status()["counts"]["applied_files"] == n;
    eventually("the file announced by the event", std::time::Duration::from_secs(20), applied(1));
    let took = sent.elapsed();

    // A pass an event starts looks at the keys announced (and the files still active),
    // not at the whole prefix: SEQ 2 uploaded without a notification is not seen, so the
    // announced SEQ 3 is held for it until SEQ 2's own notification arrives.
    let second = rig.upload(2).await;
    let third = rig.upload(3).await;
    // Announced well after its upload: the pass that applies SEQ 2 must read SEQ 3 as it
    // is listed now, not as it was when first seen.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    rig.announce(&third).await;
    eventually("SEQ 3 held", std::time::Duration::from_secs(20), || common::held(&status(), "SEV") == vec![3]);
    std::thread::sleep(std::time::Duration::from_secs(1));
    let now = status();
    assert_eq!((common::next_seq(&now, "SEV"), common::held(&now, "SEV")), (Some(2), vec![3]), "{now:#}");
    rig.announce(&second).await;
    eventually("SEQ 2 and 3 after SEQ 2's event", std::time::Duration::from_secs(20), applied(3));
    let _ = Command::new("kill").arg("-TERM").arg(service.0.id().to_string()).status();
    assert!(service.0.wait().unwrap().success(), "{}", log_text(&log));
    assert!(took < std::time::Duration::from_secs(20), "applied {took:?} after the event");
}

/// Two instances on one MongoDB store consume the same queue of S3 event notifications:
/// each notification reaches one of them, often not the one that drives the region. The
/// keys it names are handed to the owner, so every announced file is applied within
/// seconds, with the full listing an hour away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reaching_the_instance_without_the_region_are_handed_to_its_owner() {
    let work = tempfile::tempdir().unwrap();
    let names = unique("esr-handoff");
    let rig = EventsRig::new(&names).await;
    std::fs::write(work.path().join("esr.toml"), &rig.config).unwrap();
    let source = rig.source();
    let store = format!("{}/{}", mongo_uri().trim_end_matches('/'), names.replace('-', "_"));
    let base = |args: &[&str]| {
        let mut c = Command::new(common::bin());
        c.current_dir(work.path()).args(["--config", "esr.toml", "--source", &source, "--store", &store]).args(args);
        c
    };
    let mut services = Vec::new();
    let mut logs = Vec::new();
    for n in 0..2 {
        let log = work.path().join(format!("run-{n}.log"));
        let service = base(&["run", "--listen", "127.0.0.1:0"])
            .stderr(std::fs::File::create(&log).unwrap())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        services.push(common::KillOnDrop(service)); // no service outlives a failed assertion
        eventually("the events listener", std::time::Duration::from_secs(30), || {
            log_text(&log).contains("listening for S3 event notifications")
        });
        logs.push(log);
    }
    std::thread::sleep(std::time::Duration::from_secs(1)); // the first (empty) passes are over

    // Ten files of SEV, each announced once: with two consumers on the queue, about half
    // of the notifications reach the instance that does not hold SEV.
    for seq in 1..=10u64 {
        let name = rig.upload(seq).await;
        rig.announce(&name).await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    // Notifications keep coming meanwhile (of an object that does not exist), so each
    // instance is woken every second or so: that must not keep the owner from taking
    // what was handed to it.
    let noise = {
        let (channel, exchange, bucket) = (rig.channel.clone(), rig.exchange.clone(), rig.bucket.clone());
        tokio::spawn(async move {
            loop {
                announce(&channel, &exchange, &bucket, "DE_SEV_RMC_20220930_00000099.DAT").await;
                tokio::time::sleep(std::time::Duration::from_millis(400)).await;
            }
        })
    };
    let status = || {
        let out = base(&["status", "--json"]).output().unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    eventually("every announced file applied", std::time::Duration::from_secs(30), || {
        status()["counts"]["applied_files"] == 10
    });
    noise.abort();
    let all: String = logs.iter().map(|l| log_text(l)).collect();
    assert!(!all.contains("not handed off"), "{all}");
    for mut service in services {
        let _ = Command::new("kill").arg("-TERM").arg(service.0.id().to_string()).status();
        assert!(service.0.wait().unwrap().success(), "{all}");
    }
}

/// Full files on the production path: the consumers apply the records, the engine sweeps
/// each file's region once they all are; the result equals the embedded mode's, and a
/// backfill (a redelivery) removes nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_files_through_the_broker_equal_the_embedded_mode_and_remove_nothing_twice() {
    let work = tempfile::tempdir().unwrap();
    let inbox = work.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let files = [
        ("RMF", "20220730", 1, vec![common::por(1, "C", "a"), common::por(2, "C", "b"), common::pos(3, "C", "c")]),
        ("RMC", "20220731", 2, vec![common::por(4, "C", "d"), common::pos(3, "D", "")]),
        ("RMF", "20220801", 3, vec![common::por(1, "C", "a2")]),
    ];
    let mut paths = Vec::new();
    for (kind, date, seq, lines) in &files {
        let path = inbox.join(format!("DE_SEV_{kind}_{date}_{seq:08}.DAT"));
        std::fs::write(&path, common::file_text("SEV", kind, date, *seq, lines)).unwrap();
        paths.push(path);
    }
    let bucket = unique("esr-full").to_lowercase();
    upload_shuffled(&bucket, "drop/", &paths, 5).await;
    let names = unique("esr-full");
    let config = format!(
        "{}[s3]\nendpoint = \"{}\"\nregion = \"us-east-1\"\nforce_path_style = true\n",
        broker_config(&amqp_url(), &names, "records_per_message = 1\nconsumers = 2"),
        s3_endpoint()
    );
    std::fs::write(work.path().join("esr.toml"), config).unwrap();
    let store = format!("{}/{}", mongo_uri().trim_end_matches('/'), names.replace('-', "_"));
    let source = format!("s3://{bucket}/drop/");
    let dir = work.path().to_path_buf();
    let cli = move |args: &[&str]| {
        let out = Command::new(common::bin())
            .current_dir(&dir)
            .args(["--config", "esr.toml", "--source", &source, "--store", &store])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "esr-ingest {args:?}\n{}", common::describe(&out));
        out.stdout
    };
    let inbox_for_blocking = inbox.clone();
    let embedded = tokio::task::spawn_blocking(move || embedded_export(&inbox_for_blocking)).await.unwrap();
    let (first, second, status) = tokio::task::spawn_blocking(move || {
        cli(&["run", "--once"]);
        let first = cli(&["export"]);
        cli(&["backfill", "--from", "2022-07-30", "--to", "2022-08-01"]);
        let status: serde_json::Value = serde_json::from_slice(&cli(&["status", "--json"])).unwrap();
        (first, cli(&["export"]), status)
    })
    .await
    .unwrap();
    let text = String::from_utf8(first.clone()).unwrap();
    assert_eq!(text.lines().filter(|l| l.contains(r#""deleted":true"#)).count(), 3, "{text}");
    assert!(text.contains(r#""key":"2","deleted":true"#) && text.contains(r#""seq":3,"line":0"#), "{text}");
    assert!(first == embedded, "the production path's export differs from the embedded export:\n{text}");
    assert!(second == first, "the backfill changed the records");
    // POR/2 and POR/4 by the second full file (POS/3 was deleted by a line before it)
    assert_eq!(status["counts"]["records_removed"], 2, "{status:#}");
}
