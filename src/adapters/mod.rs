//! Adapters: implementations of the ports.
//!
//! | port | embedded | production (see docs/architecture.md) |
//! | --- | --- | --- |
//! | object source | [`folder::FolderSource`] | S3 |
//! | store | [`sqlite::SqliteStore`] | MongoDB |
//! | delivery | [`in_process::InProcessDelivery`] | RabbitMQ |

pub mod folder;
pub mod in_process;
pub mod sqlite;
