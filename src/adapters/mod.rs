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
