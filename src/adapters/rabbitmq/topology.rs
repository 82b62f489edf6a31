//! The broker topology, declared by the service at start, and the drift check.
//!
//! - `exchange` (direct, durable) → `queue` (quorum; dead-letters to `dlx`; delivery
//!   limit), bound with the routing key [`ROUTING_KEY`];
//! - `dlx` (fanout, durable) → `dead_letter_queue` (quorum, no delivery limit).
//!
//! Invariant: the service never runs against queues whose retry and dead-letter
//! arguments differ from its own. Declaring an existing queue with other arguments makes
//! the broker refuse (406 PRECONDITION_FAILED, naming the argument); that refusal stops
//! the service with the broker's words. (Policies are not visible over AMQP; a policy
//! that overrides these arguments is not detected here — see docs/operations.)

use super::RabbitSettings;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ErrorKind, ExchangeKind};

pub const ROUTING_KEY: &str = "records";

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("broker topology differs from this service's: {0}; refusing to start (fix the queue or the config)")]
    Drift(String),
    #[error("broker refused the topology: {0}")]
    Refused(String),
    #[error(transparent)]
    Broker(#[from] lapin::Error),
}

pub fn queue_arguments(s: &RabbitSettings) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(s.dead_letter_exchange.as_str().into()));
    args.insert("x-delivery-limit".into(), AMQPValue::LongInt(i32::try_from(s.delivery_limit).unwrap_or(i32::MAX)));
    args
}

fn dead_letter_arguments() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    args
}

fn classify(e: lapin::Error) -> TopologyError {
    if let ErrorKind::ProtocolError(amqp) = e.kind() {
        let text = amqp.get_message().as_str().to_owned();
        if *amqp.kind() == AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) {
            return TopologyError::Drift(text);
        }
        return TopologyError::Refused(text);
    }
    TopologyError::Broker(e)
}

/// Declares everything (idempotent when it already matches).
pub async fn declare(channel: &Channel, s: &RabbitSettings) -> Result<(), TopologyError> {
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    channel
        .exchange_declare(s.exchange.as_str().into(), ExchangeKind::Direct, durable, FieldTable::default())
        .await
        .map_err(classify)?;
    channel
        .exchange_declare(s.dead_letter_exchange.as_str().into(), ExchangeKind::Fanout, durable, FieldTable::default())
        .await
        .map_err(classify)?;
    channel
        .queue_declare(s.queue.as_str().into(), QueueDeclareOptions::durable(), queue_arguments(s))
        .await
        .map_err(classify)?;
    channel
        .queue_declare(s.dead_letter_queue.as_str().into(), QueueDeclareOptions::durable(), dead_letter_arguments())
        .await
        .map_err(classify)?;
    channel
        .queue_bind(
            s.queue.as_str().into(),
            s.exchange.as_str().into(),
            ROUTING_KEY.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(classify)?;
    channel
        .queue_bind(
            s.dead_letter_queue.as_str().into(),
            s.dead_letter_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(classify)?;
    Ok(())
}
