//! One AMQP connection, opened on demand and replaced after a failure.
//!
//! Every user holds the *epoch* of the connection it works on; reporting a failure with
//! that epoch drops the connection once, however many users saw it fail, and the next
//! `connection()` opens a fresh one (declaring the topology again). The broker's
//! `connection.blocked` / `unblocked` notices (memory or disk alarm) are logged and kept
//! in a flag, so waits can tell "the broker is holding us" from "the broker is gone".

use super::RabbitSettings;
use super::topology::{self, TopologyError};
use crate::adapters::redact_url as redact;
use crate::telemetry::metrics;
use futures::StreamExt;
use lapin::{Connection, ConnectionProperties, Event};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;

/// How long opening a connection may take (a frozen broker accepts TCP and says nothing).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Heartbeat asked for when the URL sets none: a dead peer is noticed within ~2× this.
const DEFAULT_HEARTBEAT_SECS: u16 = 10;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("broker unreachable: {0}")]
    Unreachable(String),
    #[error(transparent)]
    Topology(#[from] TopologyError),
}

impl LinkError {
    pub fn is_transient(&self) -> bool {
        match self {
            LinkError::Unreachable(_) => true,
            LinkError::Topology(TopologyError::Broker(_)) => true,
            LinkError::Topology(TopologyError::Drift(_) | TopologyError::Refused(_)) => false,
        }
    }
}

pub struct Link {
    url: String,
    name: String,
    settings: RabbitSettings,
    current: Mutex<Option<Current>>,
    epochs: std::sync::atomic::AtomicU64,
    /// The epoch of the live connection; 0 once a failure dropped it (until the next).
    live: std::sync::atomic::AtomicU64,
    /// The blocked flag of the current connection (a replaced connection's late notices
    /// land in its own flag, never in this one).
    blocked: std::sync::Mutex<Arc<AtomicBool>>,
}

struct Current {
    epoch: u64,
    conn: Arc<Connection>,
}

/// The URL with a heartbeat (unless it sets one), for a prompt notice of a dead broker.
fn with_heartbeat(url: &str) -> String {
    if url.contains("heartbeat=") {
        return url.to_string();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}heartbeat={DEFAULT_HEARTBEAT_SECS}")
}

impl Link {
    pub fn new(url: &str, name: &str, settings: RabbitSettings) -> Self {
        Self {
            url: with_heartbeat(url),
            name: name.into(),
            settings,
            current: Mutex::new(None),
            epochs: 0.into(),
            live: 0.into(),
            blocked: std::sync::Mutex::new(Arc::new(AtomicBool::new(false))),
        }
    }

    pub fn settings(&self) -> &RabbitSettings {
        &self.settings
    }

    pub fn describe(&self) -> String {
        format!("rabbitmq:{} (queue {})", redact(&self.url), self.settings.queue)
    }

    /// Whether the broker said it blocks this connection (a resource alarm).
    pub fn blocked(&self) -> bool {
        // A poisoned lock only means a panic elsewhere; the flag itself is fine.
        self.blocked.lock().unwrap_or_else(|p| p.into_inner()).load(Ordering::Relaxed)
    }

    /// The epoch of the live connection: 0 before the first, and from a failure seen on
    /// it ([`Link::failed`]) until the next one is opened.
    pub fn live_epoch(&self) -> u64 {
        self.live.load(Ordering::SeqCst)
    }

    /// The live connection (opening one, with the topology declared, if needed).
    pub async fn connection(&self) -> Result<(u64, Arc<Connection>), LinkError> {
        let mut current = self.current.lock().await;
        if let Some(c) = &*current
            && c.conn.status().connected()
        {
            return Ok((c.epoch, c.conn.clone()));
        }
        let slow = || LinkError::Unreachable(format!("{}: no answer within {CONNECT_TIMEOUT:?}", redact(&self.url)));
        let props = ConnectionProperties::default().with_connection_name(self.name.as_str().into());
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&self.url, props))
            .await
            .map_err(|_| slow())?
            .map_err(|e| LinkError::Unreachable(format!("{}: {e}", redact(&self.url))))?;
        let blocked = Arc::new(AtomicBool::new(false));
        self.watch(&conn, blocked.clone());
        let declare = async {
            let channel = conn.create_channel().await.map_err(|e| LinkError::Unreachable(e.to_string()))?;
            topology::declare(&channel, &self.settings).await?;
            let _ = channel.close(200, "OK".into()).await;
            Ok::<_, LinkError>(())
        };
        tokio::time::timeout(CONNECT_TIMEOUT, declare).await.map_err(|_| slow())??;
        let epoch = self.epochs.fetch_add(1, Ordering::SeqCst) + 1;
        // A poisoned lock only means a panic elsewhere; the flag itself is fine.
        *self.blocked.lock().unwrap_or_else(|p| p.into_inner()) = blocked;
        metrics::broker_blocked(&self.name, false);
        let conn = Arc::new(conn);
        *current = Some(Current { epoch, conn: conn.clone() });
        self.live.store(epoch, Ordering::SeqCst);
        tracing::info!(broker = %redact(&self.url), connection = %self.name, "connected to the broker");
        Ok((epoch, conn))
    }

    /// Checks the broker answers and the topology still matches (declared again on a
    /// channel of its own); returns the dead-letter queue's depth.
    pub async fn probe(&self) -> Result<u64, LinkError> {
        let (_, conn) = self.connection().await?;
        let check = async {
            let channel = conn.create_channel().await.map_err(|e| LinkError::Unreachable(e.to_string()))?;
            topology::declare(&channel, &self.settings).await?;
            let dlq = channel
                .queue_declare(
                    self.settings.dead_letter_queue.as_str().into(),
                    lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
                    lapin::types::FieldTable::default(),
                )
                .await
                .map_err(|e| LinkError::Unreachable(e.to_string()))?;
            let _ = channel.close(200, "OK".into()).await;
            Ok::<_, LinkError>(u64::from(dlq.message_count()))
        };
        tokio::time::timeout(CONNECT_TIMEOUT, check).await.map_err(|_| {
            LinkError::Unreachable(format!("{}: no answer within {CONNECT_TIMEOUT:?}", redact(&self.url)))
        })?
    }

    /// Drops the connection of `epoch` (once) after a failure seen on it.
    pub async fn failed(&self, epoch: u64) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|c| c.epoch == epoch)
            && let Some(Current { conn, .. }) = current.take()
        {
            self.live.store(0, Ordering::SeqCst);
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(320, "reconnecting".into())).await;
            });
        }
    }

    fn watch(&self, conn: &Connection, blocked: Arc<AtomicBool>) {
        let mut events = conn.events_listener();
        let name = self.name.clone();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                match event {
                    Event::ConnectionBlocked(reason) => {
                        blocked.store(true, Ordering::Relaxed);
                        metrics::broker_blocked(&name, true);
                        tracing::warn!(connection = %name, %reason, "broker blocked the connection (resource alarm); publishing pauses");
                    }
                    Event::ConnectionUnblocked => {
                        blocked.store(false, Ordering::Relaxed);
                        metrics::broker_blocked(&name, false);
                        tracing::info!(connection = %name, "broker unblocked the connection; publishing resumes");
                    }
                    Event::Error(e) => tracing::warn!(connection = %name, error = %e, "broker connection error"),
                    _ => {}
                }
            }
        });
    }
}
