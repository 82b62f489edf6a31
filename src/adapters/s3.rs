//! S3 (or any S3-compatible server) as the object source.
//!
//! Invariants:
//! - A full pass lists the *whole* prefix with ListObjectsV2 pagination; there is no
//!   "start after the last key" cursor, so a late file whose key sorts earlier is found.
//!   A pass woken by event notifications lists only the keys they named, each exactly as
//!   the full listing lists it.
//! - The fingerprint is size, LastModified and ETag: a new upload of the same key changes
//!   it (some S3-compatible servers list no ETag, so LastModified is part of it too).
//! - A read asks for exactly the listed object (`If-Match` on its ETag when the listing
//!   had one) and checks the ETag and LastModified it got, so an object replaced between
//!   listing and reading is reported as changed, never read half old, half new. The body is streamed (bounded memory); a body
//!   cut off mid-stream surfaces as a read error and the file is read again.
//!
//! Credentials come from the standard AWS chain (environment, profile, web identity,
//! instance metadata) and are never logged.

use crate::core::ledger::Listed;
use crate::ports::source::{ObjectReader, ObjectSource, SourceError};
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::error::SdkError;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

/// Connection settings beyond the bucket and prefix (all optional: the AWS defaults and
/// environment apply, e.g. `AWS_REGION`, `AWS_ENDPOINT_URL`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub force_path_style: bool,
}

pub struct S3Source {
    client: Client,
    bucket: String,
    prefix: String,
}

impl S3Source {
    pub async fn connect(bucket: &str, prefix: &str, settings: &S3Settings) -> Self {
        Self { client: client(settings).await, bucket: bucket.to_string(), prefix: prefix.to_string() }
    }

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// Classifies an SDK error by the HTTP status of the response, if there was one.
    fn error<E>(&self, key: &str, e: SdkError<E, HttpResponse>) -> SourceError
    where
        E: std::error::Error + 'static,
    {
        let location = self.location(key);
        let status = e.raw_response().map(|r| r.status().as_u16());
        let detail = aws_sdk_s3::error::DisplayErrorContext(&e).to_string();
        match status {
            Some(412) => SourceError::Changed { location },
            Some(404) => SourceError::NotFound { location },
            Some(401 | 403) => SourceError::Denied { location, detail },
            Some(400) => SourceError::Invalid { location, detail },
            _ => SourceError::Unavailable { location, detail },
        }
    }
}

/// How many keys a pass over notified keys looks up at once.
const LOOK_UPS_AT_ONCE: usize = 8;

/// How long connecting may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a request may wait for the first byte of its answer: a server that accepts
/// and never answers fails the request (transient) instead of hanging the pass.
const FIRST_BYTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Builds an S3 client from the standard AWS configuration chain plus `settings`.
pub async fn client(settings: &S3Settings) -> Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(FIRST_BYTE_TIMEOUT)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts);
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &settings.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let shared = loader.load().await;
    let config = aws_sdk_s3::config::Builder::from(&shared).force_path_style(settings.force_path_style).build();
    Client::from_conf(config)
}

fn fingerprint(size: u64, modified: DateTime<Utc>, etag: &str) -> String {
    format!("{size}:{}:{etag}", modified.timestamp_nanos_opt().unwrap_or_default())
}

/// The ETag part of a fingerprint made by [`fingerprint`] (empty when none was listed).
fn listed_etag(fingerprint: &str) -> &str {
    fingerprint.splitn(3, ':').nth(2).unwrap_or("")
}

fn timestamp(t: Option<&aws_sdk_s3::primitives::DateTime>) -> DateTime<Utc> {
    t.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos())).unwrap_or(DateTime::UNIX_EPOCH)
}

/// An object of a listing page as the source lists it.
fn listed(object: &aws_sdk_s3::types::Object) -> Option<Listed> {
    let key = object.key()?;
    let size = object.size().unwrap_or(0).max(0) as u64;
    let etag = object.e_tag().unwrap_or_default();
    let modified = timestamp(object.last_modified());
    Some(Listed { key: key.to_string(), size, modified, fingerprint: fingerprint(size, modified, etag), problem: None })
}

#[async_trait]
impl ObjectSource for S3Source {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    async fn list(&self) -> Result<Vec<Listed>, SourceError> {
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(&self.prefix).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error(&self.prefix, e))?;
            out.extend(page.contents().iter().filter_map(listed));
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// One request per key, a few at once: the first key under the key itself as a
    /// prefix is the key, when it exists (so it is listed exactly as the full listing
    /// lists it).
    async fn list_keys(&self, keys: &[String]) -> Result<Vec<Listed>, SourceError> {
        let look_up = |key: String| async move {
            let page = self.client.list_objects_v2().bucket(&self.bucket).prefix(&key).max_keys(1).send().await;
            let page = page.map_err(|e| self.error(&key, e))?;
            Ok::<_, SourceError>(page.contents().iter().filter_map(listed).filter(|l| l.key == key).collect::<Vec<_>>())
        };
        let keys: Vec<String> = keys.iter().filter(|k| k.starts_with(&self.prefix)).cloned().collect();
        let pages: Vec<Vec<Listed>> =
            futures::stream::iter(keys).map(look_up).buffer_unordered(LOOK_UPS_AT_ONCE).try_collect().await?;
        let mut out: Vec<Listed> = pages.into_iter().flatten().collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.dedup_by(|a, b| a.key == b.key);
        Ok(out)
    }

    async fn ping(&self) -> Result<(), SourceError> {
        let one = self.client.list_objects_v2().bucket(&self.bucket).prefix(&self.prefix).max_keys(1);
        one.send().await.map(|_| ()).map_err(|e| self.error(&self.prefix, e))
    }

    async fn open(&self, object: &Listed) -> Result<ObjectReader, SourceError> {
        let etag = listed_etag(&object.fingerprint);
        let mut request = self.client.get_object().bucket(&self.bucket).key(&object.key);
        if !etag.is_empty() {
            request = request.if_match(etag);
        }
        let output = request.send().await.map_err(|e| self.error(&object.key, e))?;
        let other_etag = !etag.is_empty() && output.e_tag().is_some_and(|got| got != etag);
        // `Last-Modified` on a GET is an HTTP date: whole seconds.
        let other_time = output.last_modified().is_some_and(|t| t.secs() != object.modified.timestamp());
        let other_size = output.content_length().is_some_and(|n| n.max(0) as u64 != object.size);
        if other_etag || other_time || other_size {
            return Err(SourceError::Changed { location: self.location(&object.key) });
        }
        Ok(Box::new(output.body.into_async_read()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_keep_the_etag_recoverable() {
        let t = DateTime::from_timestamp(1_659_196_800, 5).unwrap();
        let f = fingerprint(10, t, "\"abc-2\"");
        assert_eq!(listed_etag(&f), "\"abc-2\"");
        assert_eq!(listed_etag(&fingerprint(10, t, "")), "");
        assert_ne!(f, fingerprint(10, t + chrono::TimeDelta::seconds(1), "\"abc-2\""));
    }
}
