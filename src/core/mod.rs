//! The pure core: everything here is deterministic and free of I/O (readers are passed
//! in as `std::io::Read`), so it can be tested exhaustively with property tests.

pub mod expectation;
pub mod full;
pub mod lease;
pub mod ledger;
pub mod name;
pub mod parse;
pub mod record;
pub mod schema;
pub mod sequencer;
pub mod version;
