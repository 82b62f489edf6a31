#!/usr/bin/env bash
# Runs model-based random histories (tests/histories.rs) with fresh seeds for a given time
# and prints what ran. Not part of the test run (CI runs a fixed set of seeds).
#   scripts/soak-histories.sh [--minutes N] [--mode embedded|production] [--cases N] [--steps N]
# A failure stops the soak and prints the seed and the shrunk history; rerun it with
#   ESR_HISTORY_SEED=<seed> ESR_HISTORY_CASES=<cases> cargo nextest run --test histories
# The production mode needs the test servers: this script starts and stops them, unless
# they are already running (ESR_TEST_AMQP_URL and the rest set, as scripts/servers.sh prints).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=30
mode=embedded
cases=20
steps=30
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --mode) mode="$2"; shift 2 ;;
    --cases) cases="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    *) echo "usage: $0 [--minutes N] [--mode embedded|production] [--cases N] [--steps N]" >&2; exit 2 ;;
  esac
done
case "$mode" in
  embedded) test_name=embedded_histories_match_the_model ;;
  production) test_name=production_histories_match_the_model ;;
  *) echo "--mode is embedded or production" >&2; exit 2 ;;
esac
# Everything the soak makes is removed when it ends, however it ends.
servers_dir="" copies="" totals=""
cleanup() {
  if [ -n "$servers_dir" ]; then bash scripts/servers.sh stop "$servers_dir" || true; rm -rf "$servers_dir"; fi
  rm -rf "$copies" "$totals"
}
trap cleanup EXIT
if [ "$mode" = production ] && [ -z "${ESR_TEST_AMQP_URL:-}" ]; then
  servers_dir="$(mktemp -d "${TMPDIR:-/tmp}/esr-ingest-soak.XXXXXX")"
  server_env="$(bash scripts/servers.sh start "$servers_dir" s3 rabbitmq mongo)"
  eval "$server_env"
fi
# The test binary is run directly, so the soak holds no cargo lock while it runs.
test_bin="$(cargo test --locked --no-run --test histories --message-format=json 2>/dev/null \
  | python3 scripts/cargo_executable.py histories)"
[ -x "$test_bin" ] || { echo "could not build the histories test binary" >&2; exit 1; }
# Copies of both binaries, so a rebuild while the soak runs cannot pull them away.
copies="$(mktemp -d)"
cp "$test_bin" "$copies/histories"
cp "$(dirname "$(dirname "$test_bin")")/esr-ingest" "$copies/esr-ingest"
test_bin="$copies/histories"
export ESR_INGEST_TEST_BIN="$copies/esr-ingest"
deadline=$(( $(date +%s) + minutes * 60 ))
rounds=0
start=$(date +%s)
log="${TMPDIR:-/tmp}/esr-soak-$mode.log"
totals="$(mktemp)"
while [ "$(date +%s)" -lt "$deadline" ]; do
  seed=$(( ($(date +%s%N) / 1000) % 4000000000 ))
  if ! ESR_HISTORY_SEED=$seed ESR_HISTORY_CASES=$cases ESR_HISTORY_STEPS=$steps \
      "$test_bin" --exact "$test_name" --nocapture >"$log" 2>&1; then
    cat "$log"
    echo "soak ($mode): FAILED at seed $seed after $rounds rounds" >&2
    exit 1
  fi
  grep -h "^history totals:" "$log" >>"$totals" || true
  rounds=$((rounds + 1))
done
elapsed=$(( $(date +%s) - start ))
echo "soak ($mode): $rounds rounds (seeds), no violation, in ${elapsed}s"
# The sums of every round's totals.
awk '{ for (i = 3; i <= NF; i++) { split($i, kv, "="); sum[kv[1]] += kv[2]; if (!(kv[1] in seen)) { seen[kv[1]] = 1; order[++n] = kv[1] } } }
  END { line = "soak totals:"; for (i = 1; i <= n; i++) line = line " " order[i] "=" sum[order[i]]; print line }' "$totals"
