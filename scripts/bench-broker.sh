#!/usr/bin/env bash
# Broker pipeline benchmark (not part of the test run). Prints a table.
#
# For one generated set of files (13 regions x DAYS x RECORDS) it measures, in the same
# run and against the same RabbitMQ node (started here on loopback):
#   - the pipeline: `run --once` from a folder, publishing with confirms, consumers
#     applying into a fresh SQLite store, until every file is applied;
#   - the raw broker ceiling: the very same messages (count and bytes) published with
#     confirms and the same window, consumed with acks by as many consumers with the
#     same prefetch, no parsing on the clock and no store (benches/broker_ceiling.rs);
# once with RECORDS_PER_MESSAGE records per message and once with one per message.
#   scripts/bench-broker.sh [--days N] [--records N] [--batch N] [--workdir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
days=10 records=2000 batch=100
work="${TMPDIR:-/tmp}/esr-ingest-bench-broker"
while [ $# -gt 0 ]; do
  case "$1" in
    --days) days="$2"; shift 2 ;;
    --records) records="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --workdir) work="$2"; shift 2 ;;
    *) echo "usage: $0 [--days N] [--records N] [--batch N] [--workdir DIR]" >&2; exit 2 ;;
  esac
done
if [ ! -x /usr/bin/time ]; then
  apt-get update -qq && apt-get install -y -qq time >/dev/null
fi
cargo build --release --locked -q
cargo bench --locked -q --bench broker_ceiling --no-run 2>/dev/null
bin="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/esr-ingest" # where cargo just built it
rm -rf "$work" && mkdir -p "$work"
export ESR_AMQP_PORT="${ESR_AMQP_PORT:-26672}" ESR_RABBIT_NODE=esrbench
trap 'bash scripts/servers.sh stop "$work/servers" >/dev/null 2>&1 || true' EXIT
eval "$(bash scripts/servers.sh start "$work/servers" rabbitmq 2>/dev/null)"
url="$ESR_TEST_AMQP_URL"
"$bin" generate --out "$work/inbox" --days "$days" --records "$records" --seed 42 >/dev/null
total=$((13 * days * records))

pipeline() { # per_message -> seconds
  local per=$1 dir="$work/p$1"
  mkdir -p "$dir"
  cat > "$dir/esr.toml" <<TOML
broker = "$url"
[rabbitmq]
exchange = "bench$per.x"
queue = "bench$per.q"
dead_letter_exchange = "bench$per.dlx"
dead_letter_queue = "bench$per.dlq"
records_per_message = $per
consumers = 2
prefetch = 256
in_flight = 256
TOML
  ESR_INGEST_LOG=warn /usr/bin/time -f '%e' -o "$dir/time" "$bin" --config "$dir/esr.toml" \
    --source "$work/inbox" --store "$dir/store.db" run --once
  cat "$dir/time"
}

ceiling() { # per_message -> "messages records bytes seconds"
  cargo bench --locked -q --bench broker_ceiling -- "$url" "$work/inbox" "$1" 2 256 256 2>/dev/null | tail -1
}

echo "| records per message | messages | records | pipeline | pipeline records/s | ceiling | ceiling records/s | pipeline / ceiling |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
for per in "$batch" 1; do
  read -r messages recs bytes csecs <<< "$(ceiling "$per")"
  psecs=$(pipeline "$per")
  awk -v per="$per" -v m="$messages" -v r="$total" -v p="$psecs" -v c="$csecs" -v b="$bytes" 'BEGIN {
    printf "| %d | %d (%.1f MiB) | %d | %.2f s | %.0f | %.2f s | %.0f | %.0f %% |\n",
      per, m, b/1048576, r, p, r/p, c, r/c, 100*(r/p)/(r/c) }'
done
