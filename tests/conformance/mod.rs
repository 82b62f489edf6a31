//! Conformance suites, one per port trait, run against every implementation.
pub mod delivery;
pub mod source;
pub mod store;
