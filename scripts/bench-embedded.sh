#!/usr/bin/env bash
# Embedded-mode throughput benchmark (not part of the test run). Prints a table.
#   1. `generate` 13 regions x 30 days x 2,000 records (780k records), `run --once`
#      into a fresh store;
#   2. one large file (default ~1 GiB) into a fresh store.
# Reports records/s and peak RSS (from /usr/bin/time). Usage:
#   scripts/bench-embedded.sh [--big-records N] [--workdir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
big_records=10000000
work="${TMPDIR:-/tmp}/esr-ingest-bench"
while [ $# -gt 0 ]; do
  case "$1" in
    --big-records) big_records="$2"; shift 2 ;;
    --workdir) work="$2"; shift 2 ;;
    *) echo "usage: $0 [--big-records N] [--workdir DIR]" >&2; exit 2 ;;
  esac
done
if [ ! -x /usr/bin/time ]; then
  apt-get update -qq && apt-get install -y -qq time >/dev/null
fi
cargo build --release --locked -q
bin="$PWD/target/release/esr-ingest"
rm -rf "$work" && mkdir -p "$work"

measure() { # name, records, source dir, store path
  local name=$1 records=$2 src=$3 db=$4 log="$work/$1.time"
  rm -f "$db" "$db-wal" "$db-shm"
  ESR_INGEST_LOG=warn /usr/bin/time -f '%e %M' -o "$log" "$bin" --source "$src" --store "$db" run --once
  read -r secs kb < "$log"
  local bytes
  bytes=$(du -sb "$src" | cut -f1)
  awk -v n="$name" -v r="$records" -v s="$secs" -v kb="$kb" -v b="$bytes" 'BEGIN {
    printf "| %-28s | %10d | %8.1f MiB | %7.2f s | %10.0f | %7.1f MB |\n", n, r, b/1048576, s, r/s, kb/1024 }'
}

"$bin" generate --out "$work/burst" --days 30 --records 2000 --seed 42 >/dev/null
"$bin" generate --out "$work/big" --regions SEV --days 1 --records "$big_records" --seed 7 >/dev/null

echo "| run                          |    records |      input |      time |  records/s | peak RSS |"
echo "|------------------------------|-----------:|-----------:|----------:|-----------:|---------:|"
measure "13 regions x 30 days x 2000" $((13 * 30 * 2000)) "$work/burst" "$work/burst.db"
measure "one file" "$big_records" "$work/big" "$work/big.db"
rm -rf "$work"
