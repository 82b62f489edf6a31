#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit and property tests,
# port conformance suites, CLI integration tests and the crash test (real processes
# killed with SIGKILL). Installs what it needs and leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n== %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is required (https://rustup.rs); this project builds with rustc 1.95" >&2
  exit 1
fi
if ! command -v cargo-nextest >/dev/null 2>&1; then
  step "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

step "rustfmt"
cargo fmt --all -- --check

step "clippy (warnings are errors)"
cargo clippy --all-targets --locked -- -D warnings

step "tests"
cargo nextest run --locked --no-fail-fast --failure-output final
