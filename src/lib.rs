//! esr-ingest: ordered, version-checked ingestion of sequenced batch files.
//!
//! The crate is split the way data flows through it:
//!
//! - [`core`] — pure logic with no I/O: file-name profile, record layouts, the streaming
//!   file parser, the version rule and the per-region sequencer.
//! - [`ports`] — the narrow traits the engine talks to: an object source, a store and a
//!   record delivery.
//! - [`adapters`] — implementations of those ports (a local folder, SQLite, in-process).
//! - [`engine`] — discovery passes, sequencing and file processing over the ports.
//! - [`service`] — the running process: wiring adapters to the engine, the pass loop,
//!   the health server and the other tasks, and their shutdown order.
//! - [`health`] — the health server: probes, the status page and Prometheus metrics.
//! - [`cli`] — the command line: parses, then calls the engine or the service.

pub mod adapters;
pub mod cli;
pub mod config;
pub mod core;
pub mod engine;
pub mod generate;
pub mod health;
pub mod ports;
pub mod secrets;
pub mod service;
pub mod telemetry;
