//! The object source conformance suite against a real S3-compatible server on loopback
//! (started by `scripts/test.sh` through `scripts/servers.sh`), and the whole pipeline
//! reading from it.
//!
//! Needs `ESR_TEST_S3_ENDPOINT` (and AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
//! AWS_REGION) as `scripts/servers.sh start` prints them; fails loudly without them.

mod common;
mod conformance;

use async_trait::async_trait;
use esr_ingest::adapters::s3::{S3Settings, S3Source, client};
use esr_ingest::ports::source::ObjectSource;
use std::sync::Arc;

fn settings() -> S3Settings {
    let endpoint = std::env::var("ESR_TEST_S3_ENDPOINT")
        .expect("ESR_TEST_S3_ENDPOINT is not set: run the tests with scripts/test.sh, which starts the servers");
    S3Settings { endpoint: Some(endpoint), region: Some("us-east-1".into()), force_path_style: true }
}

/// A fresh bucket per test, so tests never see each other's objects (nor those of an
/// earlier run on the same server by a process with the same id).
async fn bucket() -> (aws_sdk_s3::Client, String) {
    let name = common::broker::unique("esr-test");
    let c = client(&settings()).await;
    c.create_bucket().bucket(&name).send().await.expect("create a bucket");
    (c, name)
}

struct S3Uploader {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

#[async_trait]
impl conformance::source::Uploader for S3Uploader {
    async fn put(&self, key: &str, bytes: &[u8]) {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(format!("{}{key}", self.prefix))
            .body(bytes.to_vec().into())
            .send()
            .await
            .expect("upload");
    }
}

async fn s3() -> ((), Arc<dyn ObjectSource>, Arc<dyn conformance::source::Uploader>) {
    let (c, bucket) = bucket().await;
    let source: Arc<dyn ObjectSource> = Arc::new(S3Source::connect(&bucket, "", &settings()).await);
    ((), source, Arc::new(S3Uploader { client: c, bucket, prefix: String::new() }))
}

source_suite!(s3_source, s3);

#[tokio::test]
async fn listing_is_paginated_and_limited_to_the_prefix() {
    let (c, bucket) = bucket().await;
    let up = S3Uploader { client: c.clone(), bucket: bucket.clone(), prefix: "in/".into() };
    use conformance::source::Uploader;
    // more than one ListObjectsV2 page (1000 keys), plus keys outside the prefix
    for i in 0..1105 {
        up.put(&format!("k{i:05}"), b"x").await;
    }
    c.put_object().bucket(&bucket).key("elsewhere/k").body(b"y".to_vec().into()).send().await.unwrap();
    let source = S3Source::connect(&bucket, "in/", &settings()).await;
    let listed = source.list().await.unwrap();
    assert_eq!(listed.len(), 1105);
    assert!(listed.iter().all(|l| l.key.starts_with("in/")));
}

/// The same files through S3 and through a folder give byte-identical exports, whatever
/// order they were uploaded in.
#[tokio::test]
async fn s3_and_folder_sources_give_the_same_export() {
    let dir = tempfile::tempdir().unwrap();
    let spec = esr_ingest::generate::GenerateSpec {
        regions: vec!["SEV".into(), "WES".into(), "WMD".into()],
        days: 4,
        start: chrono::NaiveDate::from_ymd_opt(2022, 7, 29).unwrap(),
        records: 300,
        seed: 11,
    };
    let files = esr_ingest::generate::generate(&dir.path().join("inbox"), &spec).unwrap();
    let (c, bucket) = bucket().await;
    let up = S3Uploader { client: c, bucket: bucket.clone(), prefix: "drop/2022/".into() };
    let mut shuffled = files.clone();
    shuffled.reverse();
    shuffled.rotate_left(5);
    for path in &shuffled {
        use conformance::source::Uploader;
        up.put(path.file_name().unwrap().to_str().unwrap(), &std::fs::read(path).unwrap()).await;
    }

    let folder = common::engine::embedded_engine(&dir.path().join("inbox"), &dir.path().join("folder.db")).await;
    let cancel = tokio_util::sync::CancellationToken::new();
    folder.pass(&cancel).await.unwrap();

    let mut from_s3 = common::engine::embedded_engine(&dir.path().join("unused"), &dir.path().join("s3.db")).await;
    from_s3.source = Arc::new(S3Source::connect(&bucket, "drop/", &settings()).await);
    let report = from_s3.pass(&cancel).await.unwrap();
    assert_eq!(report.applied.len(), files.len(), "{report:?}");

    let (a, b) = (
        common::engine::export_lines(folder.store.as_ref()).await,
        common::engine::export_lines(from_s3.store.as_ref()).await,
    );
    assert_eq!(a.len(), b.len());
    assert!(a == b, "exports differ");
}

/// The command line with an `s3://` source and an `[s3]` config section.
#[tokio::test]
async fn the_binary_reads_an_s3_source() {
    let (c, bucket) = bucket().await;
    let header = "HDR,RMC,SEV,20220730,00000001";
    let body = format!("{header}\nPOR,1,,C,42,Staff Nurse,DPN1,SEV,Y,RA7,1234,Org,Loc\nTRL,1\n");
    c.put_object()
        .bucket(&bucket)
        .key("in/DE_SEV_RMC_20220730_00000001.DAT")
        .body(body.into_bytes().into())
        .send()
        .await
        .unwrap();
    c.put_object().bucket(&bucket).key("in/not-a-batch.txt").body(b"x".to_vec().into()).send().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = settings();
    let config =
        format!("[s3]\nendpoint = \"{}\"\nregion = \"us-east-1\"\nforce_path_style = true\n", s.endpoint.unwrap());
    std::fs::write(dir.path().join("esr.toml"), config).unwrap();
    let bin = env!("CARGO_BIN_EXE_esr-ingest");
    let source = format!("s3://{bucket}/in/");
    let base = ["--config", "esr.toml", "--source", source.as_str(), "--store", "s.db"];
    let run =
        std::process::Command::new(bin).current_dir(dir.path()).args(base).args(["run", "--once"]).output().unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));
    let status =
        std::process::Command::new(bin).current_dir(dir.path()).args(base).args(["status", "--json"]).output().unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["counts"]["applied_files"], 1, "{status:#}");
    assert_eq!(status["streams"][0]["next_seq"], 2, "{status:#}");
    let bad = status["quarantined"].as_array().unwrap();
    assert!(
        bad.iter().any(|q| q["file"] == "not-a-batch.txt" && q["reason"].as_str().unwrap().starts_with("bad name:"))
    );
}
