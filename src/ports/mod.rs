//! Ports: the narrow traits between the engine and the outside world.
//!
//! - [`source::ObjectSource`] lists objects and streams their bytes (a folder, S3).
//! - [`store::Store`] keeps the ledger, stream state, records, rejects and the audit log,
//!   and applies one file's records atomically with its ledger state ([`store::FileTxn`]).
//! - [`delivery::Delivery`] carries a validated file's records to where they are applied
//!   (in-process into the store, or through a broker).
//! - [`notify::AlertSink`] sends one alert message (a Slack-compatible webhook).
//!
//! Every error type classifies each variant as transient (retry) or permanent, with an
//! exhaustive match so a new variant must be classified.

pub mod delivery;
pub mod notify;
pub mod retry_cause;
pub mod source;
pub mod store;

pub use retry_cause::RetryCause;
