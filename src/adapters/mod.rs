//! Adapters: implementations of the ports.
//!
//! | port | embedded | production (see docs/architecture.md) |
//! | --- | --- | --- |
//! | object source | [`folder::FolderSource`] | [`s3::S3Source`] |
//! | store | [`sqlite::SqliteStore`] | [`mongo::MongoStore`] |
//! | delivery | [`in_process::InProcessDelivery`] | [`rabbitmq::RabbitDelivery`] |

pub mod folder;
pub mod in_process;
pub mod mongo;
pub mod rabbitmq;
pub mod s3;
pub mod s3_events;
pub mod sqlite;
pub mod unreliable;
pub mod webhook;

/// The value of the test hook `ESR_INGEST_FAULT=NAME:VALUE`, when that hook is set. The
/// adapters' hooks are inert unless set, and each reads it once.
pub(crate) fn fault_hook(name: &str) -> Option<String> {
    Some(std::env::var("ESR_INGEST_FAULT").ok()?.strip_prefix(name)?.strip_prefix(':')?.to_string())
}

/// A connection URL without its credentials (`scheme://***@host/...`), for logs and
/// messages. Credentials are never logged.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***{}", &url[..scheme], &url[at..]),
        _ => url.to_string(),
    }
}
