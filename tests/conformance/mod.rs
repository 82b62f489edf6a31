//! Conformance suites, one per port trait, run against every implementation.
#![allow(dead_code)]
pub mod delivery;
pub mod source;
pub mod store;
