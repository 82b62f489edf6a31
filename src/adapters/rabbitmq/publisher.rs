//! Publishing a file's records with publisher confirms.
//!
//! Invariants:
//! - Every message is published persistent and `mandatory`, on a channel in confirm
//!   mode, and stays in the bounded in-flight window until the broker confirmed it. A
//!   negative confirm republishes it; a returned (unroutable) message fails the file.
//! - On a lost connection, a missed heartbeat or a confirm that does not come, the link
//!   is replaced (with backoff and jitter) and **every** message still in the window is
//!   published again, in order. Message ids are deterministic, so the copies a broker may
//!   already hold are recognised by the store's receipts.
//! - While the broker blocks the connection (memory or disk alarm), publishing waits
//!   and says so in the log every [`BLOCKED_NOTICE`]; nothing is dropped.
//! - A message is handed to the connection's writer in window order, and the next one
//!   follows without waiting for the writer to have sent it ([`Sending`]): the wait for
//!   that, like the wait for the confirm, happens when the message leaves the window.
//!   A message whose hand-over fails is published again with the rest of the window;
//!   after a reconnect, the window published again is waited for until it is all sent,
//!   so a connection that takes nothing counts against the reconnect's time limit.
//! - [`FileDelivery::settle`] returns only when the window is empty, i.e. every record of
//!   the file is confirmed; only then is the file's ledger entry committed as delivered.
//! - A file's channel is reused by a later file only once everything published on it is
//!   confirmed ([`IdleChannels`]); a delivery that fails or is dropped takes its channel
//!   with it.

use super::link::Link;
use super::message::{self, message_id};
use super::topology::ROUTING_KEY;
use crate::core::full::{Sweep, Swept};
use crate::core::record::{Record, Reject, Tally};
use crate::ports::RetryCause;
use crate::ports::delivery::{Delivery, DeliveryError, DeliveryProbe, FileDelivery};
use crate::ports::store::{Commit, FileTicket, Store};
use crate::telemetry::metrics;
use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, PublisherConfirm};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// The N of the test hook `ESR_INGEST_FAULT=NAME:N`, when that hook is set.
fn fault_at(name: &str) -> Option<u64> {
    crate::adapters::fault_hook(name)?.parse().ok()
}

/// Test hooks, counting confirmed messages. `ESR_INGEST_FAULT=publisher-exit-after-confirms:N`
/// makes the process exit (code 70) once N messages are confirmed: a delivery stopped
/// half-way, with part of the file at the consumers. `publisher-fail-after-confirms:N`
/// makes the delivery fail once, right after the Nth confirm, with the process going on.
/// `publisher-stop-after-confirms:N` sends the process a SIGTERM at the Nth confirm and
/// holds the publisher 300 ms, so the cancellation is in place before the delivery goes
/// on (the engine sees it at its next check: a file's next chunk, the next file).
/// `publisher-stop-then-fail-after-confirms:N` does the same, then fails the delivery: a
/// file that fails while the shutdown is under way. Read once; inert unless set.
fn after_confirm() -> Result<(), DeliveryError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    enum Hook {
        Exit,
        Fail,
        Stop,
        StopThenFail,
    }
    static HOOK: std::sync::OnceLock<Option<(Hook, u64)>> = std::sync::OnceLock::new();
    static CONFIRMED: AtomicU64 = AtomicU64::new(0);
    let hook = HOOK.get_or_init(|| {
        [
            (Hook::Exit, "publisher-exit-after-confirms"),
            (Hook::Fail, "publisher-fail-after-confirms"),
            (Hook::Stop, "publisher-stop-after-confirms"),
            (Hook::StopThenFail, "publisher-stop-then-fail-after-confirms"),
        ]
        .into_iter()
        .find_map(|(hook, name)| Some((hook, fault_at(name)?)))
    });
    let Some((hook, limit)) = hook else { return Ok(()) };
    let confirmed = CONFIRMED.fetch_add(1, Ordering::SeqCst) + 1;
    match hook {
        Hook::Exit if confirmed >= *limit => {
            tracing::error!(confirmed = limit, "ESR_INGEST_FAULT: exiting with the file half delivered");
            std::process::exit(70);
        }
        Hook::Fail if confirmed == *limit => {
            tracing::error!(confirmed = limit, "ESR_INGEST_FAULT: failing the delivery half-way");
            return Err(DeliveryError::Unavailable(format!("ESR_INGEST_FAULT: failed after {limit} confirms")));
        }
        Hook::Stop | Hook::StopThenFail if confirmed == *limit => {
            tracing::error!(confirmed = limit, "ESR_INGEST_FAULT: sending this process a SIGTERM");
            let _ = std::process::Command::new("kill").args(["-TERM", &std::process::id().to_string()]).status();
            std::thread::sleep(Duration::from_millis(300)); // a test hook: the signal's task runs meanwhile
            if matches!(hook, Hook::StopThenFail) {
                return Err(DeliveryError::Unavailable(format!(
                    "ESR_INGEST_FAULT: failed at the shutdown after {limit} confirms"
                )));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Test hook: `ESR_INGEST_FAULT=publisher-pause-between-files:N` holds a unit's delivery
/// for [`BETWEEN_FILES_PAUSE`] when it moves on to its next file for the Nth time (counted
/// over the process), its current file settled, so a test can break the connection
/// exactly at that boundary. Read once; inert unless set.
async fn between_files() {
    use std::sync::atomic::{AtomicU64, Ordering};
    static AT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    static MOVES: AtomicU64 = AtomicU64::new(0);
    let at = AT.get_or_init(|| fault_at("publisher-pause-between-files"));
    let Some(at) = at else { return };
    if MOVES.fetch_add(1, Ordering::SeqCst) + 1 == *at {
        tracing::error!(pause = ?BETWEEN_FILES_PAUSE, "ESR_INGEST_FAULT: pausing between two files of a unit");
        tokio::time::sleep(BETWEEN_FILES_PAUSE).await;
    }
}

/// How long [`between_files`] holds the delivery.
const BETWEEN_FILES_PAUSE: Duration = Duration::from_secs(4);

/// How long a confirm may take before the connection is presumed dead (unless blocked).
const CONFIRM_WAIT: Duration = Duration::from_secs(30);
/// How often a wait on a blocked broker is logged.
const BLOCKED_NOTICE: Duration = Duration::from_secs(15);
/// How long reconnecting may take before the file is given back to the engine (which
/// retries it in a later pass).
const RECOVERY_LIMIT: Duration = Duration::from_secs(300);

/// Record lines one delivery takes over a region's consecutive files at most (the
/// engine's broker unit, `engine::broker_unit`, bounds it further by bytes).
const UNIT_LINES: u64 = 100_000;

/// Confirm-mode channels kept open between files, at most.
const IDLE_CHANNELS: usize = 8;

pub struct RabbitDelivery {
    link: Arc<Link>,
    store: Arc<dyn Store>,
    idle: Arc<IdleChannels>,
}

impl RabbitDelivery {
    pub fn new(link: Arc<Link>, store: Arc<dyn Store>) -> Self {
        Self { link, store, idle: Arc::default() }
    }
}

/// Channels a file's delivery handed back with every message confirmed, for the next
/// file: opening a channel and putting it in confirm mode costs two round trips, closing
/// it a third. A channel is only kept when nothing of its file is outstanding (its window
/// is empty and the broker returned nothing), so the next file starts on a clean channel;
/// one that is no longer open, or of a connection other than the live one (none while a
/// failure is being recovered from), is dropped.
#[derive(Default)]
struct IdleChannels(std::sync::Mutex<Vec<(u64, Channel)>>);

impl IdleChannels {
    /// A kept channel of connection `epoch` that is still open, if any.
    fn take(&self, epoch: u64) -> Option<(u64, Channel)> {
        let mut idle = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        idle.retain(|(e, ch)| *e == epoch && ch.status().connected());
        idle.pop()
    }

    /// Keeps `channel` unless enough are kept; gives it back otherwise.
    fn keep(&self, channel: (u64, Channel)) -> Option<(u64, Channel)> {
        let mut idle = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() >= IDLE_CHANNELS || !channel.1.status().connected() {
            return Some(channel);
        }
        idle.push(channel);
        None
    }
}

#[async_trait]
impl Delivery for RabbitDelivery {
    fn describe(&self) -> String {
        self.link.describe()
    }

    fn asynchronous(&self) -> bool {
        true
    }

    fn group_lines(&self) -> u64 {
        UNIT_LINES
    }

    async fn probe(&self) -> Result<DeliveryProbe, DeliveryError> {
        Ok(DeliveryProbe { dead_letter_depth: Some(self.link.probe().await?) })
    }

    async fn open(&self, ticket: FileTicket) -> Result<Box<dyn FileDelivery>, DeliveryError> {
        let mut file = RabbitFile {
            link: self.link.clone(),
            store: self.store.clone(),
            per_message: self.link.settings().records_per_message.max(1),
            max_in_flight: self.link.settings().in_flight.max(1),
            ticket,
            channel: self.idle.take(self.link.live_epoch()),
            idle: self.idle.clone(),
            window: VecDeque::new(),
            buffer: Vec::new(),
            rejected: 0,
        };
        if file.channel.is_none() {
            // A broker that is down when a file starts is waited for like one that fails
            // mid-file (with an empty window, reconnecting only opens the channel).
            file.reconnect().await?;
        }
        Ok(Box::new(file))
    }
}

struct Outgoing {
    id: String,
    body: Arc<Vec<u8>>,
    properties: BasicProperties,
    /// Handed to the connection's writer, not yet sent (see [`Sending`]).
    sending: Option<Sending>,
    confirm: Option<PublisherConfirm>,
}

/// A publish whose frames are queued on the channel (its first poll queues them, in the
/// order of the calls) and that resolves, with the confirm to wait for, once the
/// connection's writer sent them. Awaiting each publish before queueing the next would
/// cost a round trip to that writer per message.
type Sending = std::pin::Pin<Box<dyn std::future::Future<Output = lapin::Result<PublisherConfirm>> + Send>>;

struct RabbitFile {
    link: Arc<Link>,
    store: Arc<dyn Store>,
    per_message: usize,
    max_in_flight: usize,
    ticket: FileTicket,
    channel: Option<(u64, Channel)>,
    idle: Arc<IdleChannels>,
    window: VecDeque<Outgoing>,
    buffer: Vec<Record>,
    rejected: u64,
}

fn unavailable(e: impl std::fmt::Display) -> DeliveryError {
    DeliveryError::Unavailable(e.to_string())
}

impl RabbitFile {
    async fn ensure_channel(&mut self) -> Result<Channel, DeliveryError> {
        if let Some((_, ch)) = &self.channel
            && ch.status().connected()
        {
            return Ok(ch.clone());
        }
        let (epoch, conn) = self.link.connection().await.map_err(DeliveryError::from)?;
        let open = async {
            let ch = conn.create_channel().await.map_err(unavailable)?;
            ch.confirm_select(ConfirmSelectOptions::default()).await.map_err(unavailable)?;
            Ok::<_, DeliveryError>(ch)
        };
        let ch = match tokio::time::timeout(CONFIRM_WAIT, open).await {
            Ok(opened) => opened,
            Err(_) => Err(unavailable("the broker did not open a channel")),
        };
        let ch = match ch {
            Ok(ch) => ch,
            Err(e) => {
                self.link.failed(epoch).await;
                return Err(e);
            }
        };
        self.channel = Some((epoch, ch.clone()));
        Ok(ch)
    }

    fn properties(&self, id: &str, first: &Record, count: usize) -> BasicProperties {
        let mut headers = FieldTable::default();
        let text = |s: &str| AMQPValue::LongString(s.into());
        let number = |n: u64| AMQPValue::LongLongInt(i64::try_from(n).unwrap_or(i64::MAX));
        headers.insert("x-esr-file".into(), text(&self.ticket.file.name));
        headers.insert("x-esr-region".into(), text(&self.ticket.file.region));
        headers.insert("x-esr-seq".into(), number(self.ticket.file.seq));
        headers.insert("x-esr-line".into(), number(first.version.line));
        headers.insert("x-esr-records".into(), number(count as u64));
        headers.insert("x-esr-generation".into(), number(u64::from(self.ticket.generation)));
        headers.insert("x-esr-trace-id".into(), text(&trace_id(&self.ticket.file.name, self.ticket.generation)));
        BasicProperties::default()
            .with_message_id(id.into())
            .with_content_type("application/json".into())
            .with_type(message::SCHEMA.into())
            .with_delivery_mode(2)
            .with_headers(headers)
    }

    /// Encodes and publishes the buffered records as one message.
    async fn flush(&mut self) -> Result<(), DeliveryError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(&mut self.buffer);
        let body = message::encode(&records, self.ticket.generation)
            .map_err(|e| DeliveryError::Refused(format!("{}: {e}", self.ticket.file.name)))?;
        let id = message_id(&self.ticket.file.name, self.ticket.generation, records[0].version.line);
        let properties = self.properties(&id, &records[0], records.len());
        while self.window.len() >= self.max_in_flight {
            self.settle_oldest().await?;
        }
        self.window.push_back(Outgoing { id, body: Arc::new(body), properties, sending: None, confirm: None });
        let last = self.window.len() - 1;
        if let Err(e) = self.publish(last).await {
            tracing::warn!(error = %e, "publish failed; reconnecting");
            self.recover().await?;
        }
        Ok(())
    }

    /// Publishes `window[i]` on the current channel: queues its frames and goes on (see
    /// [`Sending`]); [`Self::sent`] waits for them to go out.
    async fn publish(&mut self, i: usize) -> Result<(), DeliveryError> {
        let ch = self.ensure_channel().await?;
        let exchange = self.link.settings().exchange.clone();
        let out = &mut self.window[i];
        // A publish of this message on an earlier channel no longer counts.
        (out.confirm, out.sending) = (None, None);
        let (body, properties) = (out.body.clone(), out.properties.clone());
        let mut sending: Sending = Box::pin(async move {
            let options = BasicPublishOptions { mandatory: true, ..Default::default() };
            ch.basic_publish(exchange.as_str().into(), ROUTING_KEY.into(), options, &body, properties).await
        });
        // The first poll queues the frames, so messages go out in the order of the calls.
        match futures::poll!(sending.as_mut()) {
            std::task::Poll::Ready(Ok(confirm)) => out.confirm = Some(confirm),
            std::task::Poll::Ready(Err(e)) => return Err(unavailable(e)),
            std::task::Poll::Pending => out.sending = Some(sending),
        }
        Ok(())
    }

    /// Waits until the frames of `window[i]` are sent, so its confirm can be awaited; an
    /// error when they could not be (the connection failed, or the broker took nothing for
    /// [`BLOCKED_NOTICE`] without blocking the connection).
    async fn sent(&mut self, i: usize) -> Result<(), DeliveryError> {
        let (window, link) = (&mut self.window, &self.link);
        let Some(out) = window.get_mut(i) else { return Ok(()) };
        let Some(mut sending) = out.sending.take() else { return Ok(()) };
        loop {
            match tokio::time::timeout(BLOCKED_NOTICE, sending.as_mut()).await {
                Ok(Ok(confirm)) => {
                    out.confirm = Some(confirm);
                    return Ok(());
                }
                Ok(Err(e)) => return Err(unavailable(format!("message {}: {e}", out.id))),
                Err(_) if link.blocked() => {
                    tracing::warn!(message = %out.id, "broker blocks publishing (resource alarm); waiting");
                }
                Err(_) => return Err(unavailable(format!("the broker did not take message {}", out.id))),
            }
        }
    }

    /// Waits for the oldest message's confirm and takes it out of the window.
    async fn settle_oldest(&mut self) -> Result<(), DeliveryError> {
        let mut waited = Duration::ZERO;
        loop {
            if let Err(e) = self.sent(0).await {
                tracing::warn!(error = %e, "publish failed; reconnecting");
                self.recover().await?;
                continue;
            }
            let Some(front) = self.window.front_mut() else { return Ok(()) };
            let Some(mut confirm) = front.confirm.take() else {
                self.recover().await?;
                continue;
            };
            match tokio::time::timeout(BLOCKED_NOTICE, &mut confirm).await {
                Ok(Ok(Confirmation::Ack(None))) | Ok(Ok(Confirmation::NotRequested)) => {
                    metrics::confirms("ack", 1);
                    self.window.pop_front();
                    return after_confirm();
                }
                Ok(Ok(Confirmation::Ack(Some(returned)))) => {
                    return Err(DeliveryError::Unroutable(format!(
                        "{}: the broker returned a message ({} {}); is queue {} bound to exchange {}?",
                        self.ticket.file.name,
                        returned.reply_code,
                        returned.reply_text,
                        self.link.settings().queue,
                        self.link.settings().exchange
                    )));
                }
                Ok(Ok(Confirmation::Nack(_))) => {
                    metrics::confirms("nack", 1);
                    tracing::warn!(message = %front.id, "broker refused a message (nack); publishing it again");
                    if self.publish(0).await.is_err() {
                        self.recover().await?;
                    }
                }
                Ok(Err(e)) => {
                    metrics::confirms("lost", self.window.len() as u64);
                    tracing::warn!(error = %e, "confirm lost with the connection; reconnecting");
                    self.recover().await?;
                }
                Err(_) => {
                    front.confirm = Some(confirm);
                    waited += BLOCKED_NOTICE;
                    if self.link.blocked() {
                        tracing::warn!(waited = ?waited, "broker blocks the connection (resource alarm); waiting for confirms");
                    } else if waited >= CONFIRM_WAIT {
                        metrics::confirms("lost", self.window.len() as u64);
                        tracing::warn!(waited = ?waited, "no confirm from the broker; reconnecting");
                        self.recover().await?;
                        waited = Duration::ZERO;
                    }
                }
            }
        }
    }

    /// Replaces the connection and publishes everything unconfirmed again, in order.
    async fn recover(&mut self) -> Result<(), DeliveryError> {
        metrics::retry(RetryCause::BrokerReconnect);
        if let Some((epoch, _)) = self.channel.take() {
            self.link.failed(epoch).await;
        }
        self.reconnect().await?;
        tracing::info!(
            file = %self.ticket.file.name,
            republished = self.window.len(),
            "reconnected; unconfirmed messages published again"
        );
        Ok(())
    }

    /// Opens a channel and publishes the window again, retrying with backoff and jitter
    /// for at most [`RECOVERY_LIMIT`].
    async fn reconnect(&mut self) -> Result<(), DeliveryError> {
        let mut delay = reconnect_backoff();
        loop {
            match self.republish_all().await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_transient() => match delay.next() {
                    Some(d) => {
                        metrics::retry(RetryCause::BrokerUnavailable);
                        tracing::warn!(error = %e, retry_in = ?d, "broker not reachable; retrying");
                        tokio::time::sleep(d).await;
                    }
                    None => return Err(e),
                },
                Err(e) => return Err(e),
            }
        }
    }

    /// Publishes every message of the window, then waits until all of them are sent.
    async fn publish_window(&mut self) -> Result<(), DeliveryError> {
        for i in 0..self.window.len() {
            self.publish(i).await?;
        }
        for i in 0..self.window.len() {
            self.sent(i).await?;
        }
        Ok(())
    }

    /// Publishes the window again on a new channel, and waits until all of it is sent: a
    /// connection that takes nothing fails here, within [`Self::reconnect`]'s limit.
    async fn republish_all(&mut self) -> Result<(), DeliveryError> {
        self.channel = None;
        self.ensure_channel().await?;
        let done = self.publish_window().await;
        if done.is_err()
            && let Some((epoch, _)) = self.channel.take()
        {
            self.link.failed(epoch).await;
        }
        done
    }
}

/// Backoff with jitter for reconnecting, for at most [`RECOVERY_LIMIT`] in all.
fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_total_delay(Some(RECOVERY_LIMIT))
        .without_max_times()
        .build()
}

/// A short, stable id tying together every message of one delivery of a file.
fn trace_id(file: &str, generation: u32) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{file}/{generation}").as_bytes());
    hex::encode(&digest[..8])
}

#[async_trait]
impl FileDelivery for RabbitFile {
    async fn send(&mut self, batch: Vec<Record>) -> Result<(), DeliveryError> {
        for record in batch {
            self.buffer.push(record);
            if self.buffer.len() >= self.per_message {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn reject(&mut self, batch: Vec<Reject>) -> Result<(), DeliveryError> {
        self.rejected += batch.len() as u64;
        Ok(self.store.keep_rejects(batch).await?)
    }

    async fn settle(&mut self) -> Result<Tally, DeliveryError> {
        self.flush().await?;
        while !self.window.is_empty() {
            self.settle_oldest().await?;
        }
        Ok(Tally { rejected: self.rejected, ..Default::default() })
    }

    async fn sweep(&mut self, _sweep: &Sweep) -> Result<Option<Swept>, DeliveryError> {
        Ok(None) // the consumers apply the records; the engine sweeps once they all are
    }

    /// The next file goes out on the same channel once everything of the current one is
    /// confirmed: each message carries its own file's headers and id, so a window that is
    /// published again after a reconnect stays right.
    async fn next_file(&mut self, ticket: FileTicket) -> Result<(), DeliveryError> {
        self.settle().await?;
        between_files().await;
        self.ticket = ticket;
        self.rejected = 0;
        Ok(())
    }

    async fn commit(mut self: Box<Self>, commit: Commit) -> Result<(), DeliveryError> {
        self.settle().await?;
        // Everything is confirmed: the channel is clean for the next file.
        let surplus = self.channel.take().and_then(|channel| self.idle.keep(channel));
        self.store.commit(commit).await?;
        if let Some((_, ch)) = surplus {
            // A close that does not go out (a blocked connection) must not hold the file.
            let _ = tokio::time::timeout(Duration::from_secs(2), ch.close(200, "OK".into())).await;
        }
        Ok(())
    }
}
