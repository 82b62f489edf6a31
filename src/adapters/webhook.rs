//! A Slack-compatible incoming webhook: `POST {"text": ...}` as JSON.
//!
//! 2xx is accepted; 408, 429 and 5xx and network failures are transient; any other
//! status is a refusal (a wrong or revoked URL), which retrying cannot fix. The URL's
//! path is a credential and is never logged.

use crate::ports::notify::{AlertSink, NotifyError};
use async_trait::async_trait;
use std::time::Duration;

/// The longest one delivery attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Webhook {
    url: String,
    client: reqwest::Client,
}

impl Webhook {
    pub fn new(url: &str) -> Result<Self, NotifyError> {
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .user_agent(concat!("esr-ingest/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| NotifyError::Refused(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { url: url.to_string(), client })
    }
}

#[async_trait]
impl AlertSink for Webhook {
    /// Scheme and host only: a webhook's path is its secret.
    fn describe(&self) -> String {
        let (scheme, rest) = self.url.split_once("://").unwrap_or(("", &self.url));
        let host = rest.split(['/', '?']).next().unwrap_or_default();
        let host = host.rsplit('@').next().unwrap_or_default();
        format!("{scheme}://{host}/…")
    }

    async fn send(&self, text: &str) -> Result<(), NotifyError> {
        let body = serde_json::json!({ "text": text }).to_string();
        let sent = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            // `without_url`: the error would otherwise print the whole URL, path included.
            .map_err(|e| NotifyError::Unavailable(format!("{}: {}", self.describe(), e.without_url())))?;
        let status = sent.status();
        if status.is_success() {
            return Ok(());
        }
        let detail = format!("{}: HTTP {status}", self.describe());
        if status.as_u16() == 408 || status.as_u16() == 429 || status.is_server_error() {
            Err(NotifyError::Unavailable(detail))
        } else {
            Err(NotifyError::Refused(detail))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_path_is_never_shown() {
        let hook = Webhook::new("https://user:pw@hooks.example.com/services/T0/B0/secret?x=1").unwrap();
        assert_eq!(hook.describe(), "https://hooks.example.com/…");
    }
}
