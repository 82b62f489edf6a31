//! Any text as a layout file, then a line to check against it: see `checks::layout`. The
//! input is the layout's text, a NUL byte, and the line (fields split at commas), so the
//! corpus can start from real layout files.
#![no_main]

#[path = "../../tests/common/fuzz_checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::layout_input(data));
