#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit and property tests,
# port conformance suites (also against real servers on loopback: RabbitMQ, an
# S3-compatible server, a MongoDB-wire server), CLI integration tests, broker fault tests
# and the crash test (real processes killed with SIGKILL). Installs what it needs
# (cargo-nextest, chromium, promtool; rabbitmq-server, s3s-fs, nx-27017 via scripts/servers.sh) and leaves
# nothing running.
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

if ! command -v chromium >/dev/null 2>&1; then
  step "installing chromium (the status page is tested in headless Chromium)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

if ! command -v promtool >/dev/null 2>&1; then
  step "installing promtool (the Prometheus alert rules are checked with it)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

step "rustfmt"
cargo fmt --all -- --check

step "clippy (warnings are errors)"
cargo clippy --all-targets --locked -- -D warnings

step "rustdoc (broken links in doc comments are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --lib --locked

# RabbitMQ blocks every publisher when its disk runs low (a disk alarm), and the broker
# tests would then wait without an obvious cause: say so up front instead.
free_kib="$(df -Pk "${TMPDIR:-/tmp}" | awk 'NR == 2 { print $4 }')"
if [ "${free_kib:-0}" -lt $((2 * 1024 * 1024)) ]; then
  echo "only $((free_kib / 1024)) MiB free under ${TMPDIR:-/tmp}: the tests need at least 2 GiB (RabbitMQ's disk alarm would block publishing)" >&2
  exit 1
fi

step "starting test servers on loopback (RabbitMQ, S3-compatible, MongoDB-wire)"
servers_dir="$(mktemp -d "${TMPDIR:-/tmp}/esr-ingest-servers.XXXXXX")"
trap 'bash scripts/servers.sh stop "$servers_dir" || true; rm -rf "$servers_dir"' EXIT
# (assigned first, so a server that does not start fails the run here)
server_env="$(bash scripts/servers.sh start "$servers_dir" s3 rabbitmq mongo)"
eval "$server_env"

step "tests"
cargo nextest run --locked --no-fail-fast --failure-output final

step "reliability report (docs/reliability.md)"
python3 scripts/reliability-report.py
