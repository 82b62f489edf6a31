//! RabbitMQ delivery (production): records published with publisher confirms to a
//! quorum queue, applied by consumers, with a dead-letter queue for poison records.
//!
//! | file | responsibility |
//! | --- | --- |
//! | `topology.rs` | exchanges and queues, declared at start; drift refused |
//! | `link.rs` | one connection, replaced after failures; resource alarms |
//! | `message.rs` | the versioned JSON message and its deterministic ids |
//! | `publisher.rs` | the [`Delivery`](crate::ports::delivery::Delivery): confirms, window, republish |
//! | `consumer.rs` | consumers: apply, ack after the write, dead-letter poison |
//! | `dlq.rs` | `dlq list / replay / purge` |

mod consumer;
pub mod dlq;
mod link;
pub mod message;
mod publisher;
pub mod topology;

pub use consumer::{ConsumerPool, WEDGED_AFTER as CONSUMER_WEDGED_AFTER};
pub use link::{Link, LinkError};
pub use publisher::RabbitDelivery;

use crate::ports::delivery::DeliveryError;

/// The `[rabbitmq]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RabbitSettings {
    pub exchange: String,
    pub queue: String,
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
    /// Deliveries of one message before the broker dead-letters it (a consumer crash loop).
    pub delivery_limit: u32,
    /// Records per message (1 = one message per record).
    pub records_per_message: usize,
    /// Unconfirmed messages a publisher may have outstanding.
    pub in_flight: usize,
    /// Consumers started by this process (0: only publish).
    pub consumers: usize,
    /// Unacknowledged messages per consumer.
    pub prefetch: u16,
}

impl Default for RabbitSettings {
    fn default() -> Self {
        Self {
            exchange: "esr-ingest.records".into(),
            queue: "esr-ingest.records".into(),
            dead_letter_exchange: "esr-ingest.dead-letter".into(),
            dead_letter_queue: "esr-ingest.records.dlq".into(),
            delivery_limit: 5,
            records_per_message: 100,
            in_flight: 256,
            consumers: 2,
            prefetch: 256,
        }
    }
}

impl From<LinkError> for DeliveryError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Unreachable(d) => DeliveryError::Unavailable(d),
            LinkError::Topology(t) => match t {
                topology::TopologyError::Broker(b) => DeliveryError::Unavailable(b.to_string()),
                other => DeliveryError::Topology(other.to_string()),
            },
        }
    }
}
