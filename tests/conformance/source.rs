//! The object source conformance suite: every `ObjectSource` must pass it.
//! A fixture gives the source plus a way to put objects into it.

use async_trait::async_trait;
use esr_ingest::core::ledger::Listed;
use esr_ingest::core::name::object_name;
use esr_ingest::ports::source::{ObjectSource, SourceError};
use std::collections::{BTreeMap, HashSet};
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

fn by_key(listing: Vec<Listed>) -> BTreeMap<String, Listed> {
    listing.into_iter().map(|l| (l.key.clone(), l)).collect()
}

/// A quick listing lists what the full listing lists, as it lists it, but may leave out
/// the objects of settled names that no other key shares.
pub async fn a_quick_listing_leaves_out_only_settled_names(source: Arc<dyn ObjectSource>, up: Arc<dyn Uploader>) {
    let (settled, other, nested, shared) = (
        "DE_SEV_RMC_20220729_00000001.DAT",
        "DE_SEV_RMC_20220730_00000002.DAT",
        "deep/er/DE_WES_RMC_20220730_00000007.DAT",
        "DE_NWS_RMC_20220730_00000003.DAT",
    );
    up.put(settled, b"one").await;
    up.put(other, b"two").await;
    up.put(nested, b"seven").await;
    up.put(&format!("a/{shared}"), b"three").await;
    let names: HashSet<String> = [settled, object_name(nested), shared, "DE_SEV_RMC_20220101_00000009.DAT"]
        .iter()
        .map(|n| n.to_string())
        .collect();
    // After the look at the ledger: a new name, the same name under a second key, an
    // object of a settled name uploaded again in place.
    up.put("DE_SEV_RMC_20220731_00000004.DAT", b"four").await;
    up.put(&format!("b/{shared}"), b"three again").await;
    up.put(settled, b"one, rewritten").await;
    let quick = by_key(source.list_quick(Arc::new(move |name: &str| names.contains(name))).await.unwrap());
    let full = by_key(source.list().await.unwrap());
    let may_leave_out = [settled, nested];
    for (key, listed) in &full {
        match quick.get(key) {
            Some(got) => assert_eq!(got, listed, "{key} is listed as the full listing lists it"),
            None => assert!(may_leave_out.contains(&key.as_str()), "{key} left out of a quick listing"),
        }
    }
    assert!(quick.keys().all(|k| full.contains_key(k)), "a quick listing lists nothing the full one does not");
}

/// Listing given keys lists exactly those that exist, as the full listing lists them.
pub async fn listing_keys_lists_exactly_those_as_the_full_listing(
    source: Arc<dyn ObjectSource>,
    up: Arc<dyn Uploader>,
) {
    let (one, nested) = ("DE_SEV_RMC_20220730_00000001.DAT", "in/DE_SEV_RMC_20220731_00000002.DAT");
    up.put(one, b"one").await;
    up.put(&format!("{one}.bak"), b"a longer key under the same prefix").await;
    up.put(nested, b"two").await;
    up.put(".DE_SEV_RMC_20220801_00000003.DAT", b"an upload in progress").await;
    let keys: Vec<String> =
        [one, nested, "DE_SEV_RMC_2022", "missing.DAT", nested].iter().map(|k| k.to_string()).collect();
    let got = source.list_keys(&keys).await.unwrap();
    let full = by_key(source.list().await.unwrap());
    let got_keys: Vec<&str> = got.iter().map(|l| l.key.as_str()).collect();
    assert_eq!(got_keys, vec![one, nested], "exactly the keys asked for that exist, once each, in key order");
    for listed in &got {
        assert_eq!(listed, &full[&listed.key]);
    }
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
            async fn a_quick_listing_leaves_out_only_settled_names() {
                let (_guard, source, up) = $factory().await;
                conformance::source::a_quick_listing_leaves_out_only_settled_names(source, up).await;
            }
            #[tokio::test]
            async fn listing_keys_lists_exactly_those_as_the_full_listing() {
                let (_guard, source, up) = $factory().await;
                conformance::source::listing_keys_lists_exactly_those_as_the_full_listing(source, up).await;
            }
            #[tokio::test]
            async fn large_objects_stream() {
                let (_guard, source, up) = $factory().await;
                conformance::source::large_objects_stream(source, up).await;
            }
        }
    };
}
