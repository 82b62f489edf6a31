//! Any object key: see `checks::name`.
#![no_main]

#[path = "../../tests/common/fuzz_checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|key: &str| checks::name(key));
