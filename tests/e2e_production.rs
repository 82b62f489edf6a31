//! End to end through the production adapters on loopback: files uploaded to an
//! S3-compatible server in a shuffled order, published through RabbitMQ, applied by the
//! consumers to the MongoDB-wire store — and exported byte for byte like the embedded
//! mode exports the same files.

mod broker_support;
mod common;

use broker_support::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use std::process::Command;

fn s3_endpoint() -> String {
    std::env::var("ESR_TEST_S3_ENDPOINT")
        .expect("ESR_TEST_S3_ENDPOINT is not set: run the tests with scripts/test.sh, which starts the servers")
}

async fn upload_shuffled(bucket: &str, prefix: &str, files: &[std::path::PathBuf], seed: u64) {
    let settings = esr_ingest::adapters::s3::S3Settings {
        endpoint: Some(s3_endpoint()),
        region: Some("us-east-1".into()),
        force_path_style: true,
    };
    let client = esr_ingest::adapters::s3::client(&settings).await;
    client.create_bucket().bucket(bucket).send().await.expect("create the bucket");
    let mut order = files.to_vec();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    for path in &order {
        let key = format!("{prefix}{}", path.file_name().unwrap().to_str().unwrap());
        let body = std::fs::read(path).unwrap();
        client.put_object().bucket(bucket).key(key).body(body.into()).send().await.expect("upload");
    }
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
        let out = Command::new(common::BIN)
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
