//! The object source conformance suite: every `ObjectSource` must pass it.
//! A fixture gives the source plus a way to put objects into it.

use async_trait::async_trait;
use esr_ingest::ports::source::{ObjectSource, SourceError};
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// Puts objects into the source under test (the way an upstream system would).
#[async_trait]
pub trait Uploader: Send + Sync {
    async fn put(&self, key: &str, bytes: &[u8]);
}

async fn read_all(source: &dyn ObjectSource, key: &str) -> Result<Vec<u8>, SourceError> {
    let listed = source.list().await?.into_iter().find(|l| l.key == key).expect("listed");
    let mut r = source.open(&listed).await?;
    let mut out = Vec::new();
    r.read_to_end(&mut out)
        .await
        .map_err(|e| SourceError::Unavailable { location: key.into(), detail: e.to_string() })?;
    Ok(out)
}

pub async fn lists_everything_including_nested_keys(source: Arc<dyn ObjectSource>, up: Arc<dyn Uploader>) {
    up.put("b/DE_SEV_RMC_20220730_00000002.DAT", b"two").await;
    up.put("DE_SEV_RMC_20220729_00000001.DAT", b"one").await;
    up.put("a/deeper/z.txt", b"z").await;
    let keys: Vec<String> = source.list().await.unwrap().into_iter().map(|l| l.key).collect();
    for k in ["b/DE_SEV_RMC_20220730_00000002.DAT", "DE_SEV_RMC_20220729_00000001.DAT", "a/deeper/z.txt"] {
        assert!(keys.contains(&k.to_string()), "{k} missing from {keys:?}");
    }
    assert_eq!(read_all(source.as_ref(), "b/DE_SEV_RMC_20220730_00000002.DAT").await.unwrap(), b"two");
}

pub async fn a_new_upload_changes_the_fingerprint(source: Arc<dyn ObjectSource>, up: Arc<dyn Uploader>) {
    let key = "DE_SEV_RMC_20220730_00000002.DAT";
    up.put(key, b"first").await;
    let first = source.list().await.unwrap().into_iter().find(|l| l.key == key).unwrap();
    up.put(key, b"second").await;
    let second = source.list().await.unwrap().into_iter().find(|l| l.key == key).unwrap();
    assert_ne!(first.fingerprint, second.fingerprint);
    // opening the stale listing is refused rather than returning other bytes
    match source.open(&first).await {
        Err(SourceError::Changed { .. }) => {}
        Err(e) => panic!("expected Changed, got {e}"),
        Ok(_) => panic!("opened a replaced object"),
    }
    assert_eq!(read_all(source.as_ref(), key).await.unwrap(), b"second");
}

pub async fn large_objects_stream(source: Arc<dyn ObjectSource>, up: Arc<dyn Uploader>) {
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    up.put("big.DAT", &big).await;
    assert_eq!(read_all(source.as_ref(), "big.DAT").await.unwrap(), big);
}

/// A reachable source answers its readiness ping, before and after objects arrive.
pub async fn ping_answers(source: Arc<dyn ObjectSource>, up: Arc<dyn Uploader>) {
    source.ping().await.expect("an empty source answers");
    up.put("DE_SEV_RMC_20220730_00000001.DAT", b"x").await;
    source.ping().await.expect("a source with objects answers");
}

#[macro_export]
macro_rules! source_suite {
    ($name:ident, $factory:expr) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn lists_everything_including_nested_keys() {
                let (_guard, source, up) = $factory().await;
                conformance::source::lists_everything_including_nested_keys(source, up).await;
            }
            #[tokio::test]
            async fn a_new_upload_changes_the_fingerprint() {
                let (_guard, source, up) = $factory().await;
                conformance::source::a_new_upload_changes_the_fingerprint(source, up).await;
            }
            #[tokio::test]
            async fn ping_answers() {
                let (_guard, source, up) = $factory().await;
                conformance::source::ping_answers(source, up).await;
            }
            #[tokio::test]
            async fn large_objects_stream() {
                let (_guard, source, up) = $factory().await;
                conformance::source::large_objects_stream(source, up).await;
            }
        }
    };
}
