//! Secrets never reach an output: URL passwords, webhook paths and keys are registered
//! here as soon as they are read, and every byte written to stderr (text and JSON logs,
//! the final error line) and every health-server body is scrubbed of them.
//!
//! Invariant: a registered secret is replaced by `***` wherever it appears, whichever
//! library formatted the text. Adapters still redact what they format themselves
//! (`adapters::redact_url`); this is the net under them.

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::{PoisonError, RwLock};

/// Shorter values are not registered: they would scrub ordinary words.
const MIN_SECRET_LEN: usize = 4;
/// A URL path shorter than this is not taken for a credential (`/webhook` is no secret;
/// a Slack-style path is far longer).
const MIN_SECRET_PATH_LEN: usize = 12;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers a secret value.
pub fn register(secret: &str) {
    if secret.len() < MIN_SECRET_LEN {
        return;
    }
    // As written, and as a JSON log writes it (quotes and backslashes escaped).
    let escaped = serde_json::to_string(secret).unwrap_or_default();
    let escaped = escaped.trim_matches('"');
    let mut secrets = SECRETS.write().unwrap_or_else(PoisonError::into_inner);
    for form in [secret, escaped] {
        if !form.is_empty() && !secrets.iter().any(|s| s == form) {
            secrets.push(form.to_string());
        }
    }
    // Longest first, so a secret that contains another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Registers the secret parts of every URL in a text (a config file before it is parsed).
pub fn register_urls_in(text: &str) {
    for word in text.split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '[' | ']' | '{' | '}' | '=')) {
        if word.contains("://") {
            register_url(word);
        }
    }
}

/// Registers the secret parts of a URL: its password (and its percent-decoded form), and
/// for an `http(s)` URL its path and query (a webhook's path is its credential).
pub fn register_url(url: &str) {
    let Ok(parsed) = url::Url::parse(url) else {
        // Not a URL we can take apart: register what stands between `://` and `@`.
        if let (Some(scheme), Some(at)) = (url.find("://"), url.rfind('@'))
            && at > scheme + 3
        {
            let userinfo = &url[scheme + 3..at];
            register(userinfo.split_once(':').map_or(userinfo, |(_, pw)| pw));
        }
        return;
    };
    if let Some(password) = parsed.password() {
        register(password);
        if let Ok(decoded) = percent_encoding::percent_decode_str(password).decode_utf8() {
            register(&decoded);
        }
    }
    if matches!(parsed.scheme(), "http" | "https") {
        let path = parsed.path().trim_start_matches('/');
        if path.len() >= MIN_SECRET_PATH_LEN {
            register(path);
        }
        if let Some(query) = parsed.query() {
            register(query);
        }
    }
}

/// `text` with every registered secret replaced by `***`.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.read().unwrap_or_else(PoisonError::into_inner);
    let mut out = Cow::Borrowed(text);
    for secret in secrets.iter() {
        if out.contains(secret.as_str()) {
            out = Cow::Owned(out.replace(secret.as_str(), "***"));
        }
    }
    out
}

/// A writer that scrubs what it is given. `tracing`'s formatter writes each event with
/// one call, so a secret is never split between two writes.
pub struct Scrubbed<W>(pub W);

impl<W: Write> Write for Scrubbed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// stderr, scrubbed: the writer of the log subscriber.
pub fn stderr() -> Scrubbed<io::Stderr> {
    Scrubbed(io::stderr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_webhook_paths_and_keys_are_scrubbed() {
        register_url("amqp://user:pa%24%24word@broker:5672/vhost");
        register_url("https://hooks.example.com/services/T000/B000/XXXXSECRET");
        register_url("gopher://u:rawsecret@x@host");
        register("AKIASECRETKEY");
        let text = "amqp://user:pa%24%24word@broker pa$$word POST https://hooks.example.com/services/T000/B000/XXXXSECRET rawsecret@x AKIASECRETKEY";
        let clean = scrub(text);
        for secret in ["pa%24%24word", "pa$$word", "services/T000/B000/XXXXSECRET", "rawsecret", "AKIASECRETKEY"] {
            assert!(!clean.contains(secret), "{secret} in {clean}");
        }
        assert!(clean.contains("hooks.example.com"), "{clean}");
    }
}
