#!/usr/bin/env bash
# Compares built esr-ingest binaries on a backlog (not part of the test run).
#
# On a shared machine one timing says little: the same binary varies by 10-20 % from one
# minute to the next. This runs the binaries in turn, ROUNDS times, each `run --once` of
# the same generated set (13 regions x DAYS x RECORDS, seed 7) into a fresh SQLite store,
# and prints the median, the lowest and the highest wall time of each, with its median
# CPU (user + system) and the median bytes it wrote to disk (the WAL, the store). Compare
# the medians of one run of this script, never across runs.
#
# --broker runs each through RabbitMQ instead (100 records a message, 2 consumers,
# prefetch 256: the defaults), started here by scripts/servers.sh on loopback port
# ESR_BENCH_AMQP_PORT (26692), a fresh queue for every run.
#   scripts/bench-ab.sh [--broker] [--rounds N] [--days N] [--records N] [--workdir DIR] BIN [BIN...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
rounds=9 days=30 records=2000 broker=""
work="${TMPDIR:-/tmp}/esr-ingest-bench-ab"
bins=()
usage() {
  echo "usage: $0 [--broker] [--rounds N] [--days N] [--records N] [--workdir DIR] BIN [BIN...]" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in
    --broker) broker=1; shift ;;
    --rounds) rounds="$2"; shift 2 ;;
    --days) days="$2"; shift 2 ;;
    --records) records="$2"; shift 2 ;;
    --workdir) work="$2"; shift 2 ;;
    -*) usage ;;
    *) bins+=("$(realpath "$1")"); shift ;;
  esac
done
[ ${#bins[@]} -gt 0 ] || usage
if [ ! -x /usr/bin/time ]; then
  apt-get update -qq && apt-get install -y -qq time >/dev/null
fi
mkdir -p "$work"
set_dir="$work/set-$days-$records"
if [ ! -d "$set_dir" ]; then
  "${bins[0]}" generate --out "$set_dir.tmp" --days "$days" --records "$records" --seed 7 >/dev/null
  mv "$set_dir.tmp" "$set_dir"
fi
config=()
if [ -n "$broker" ]; then
  export ESR_AMQP_PORT="${ESR_BENCH_AMQP_PORT:-26692}" ESR_RABBIT_NODE=esrbenchab
  trap 'bash "$here/servers.sh" stop "$work/servers" >/dev/null 2>&1 || true' EXIT
  eval "$(bash "$here/servers.sh" start "$work/servers" rabbitmq 2>/dev/null)"
  config=(--config "$work/esr.toml")
fi
declare -A walls cpus written
run=0
for _ in $(seq "$rounds"); do
  for i in "${!bins[@]}"; do
    rm -f "$work"/store.db*
    run=$((run + 1))
    if [ -n "$broker" ]; then
      printf 'broker = "%s"\n[rabbitmq]\nexchange = "ab%d.x"\nqueue = "ab%d.q"\n' "$ESR_TEST_AMQP_URL" $run $run >"$work/esr.toml"
      printf 'dead_letter_exchange = "ab%d.dlx"\ndead_letter_queue = "ab%d.dlq"\n' $run $run >>"$work/esr.toml"
    fi
    # wall, user, system seconds and 512-byte blocks written of one run
    read -r wall user sys blocks < <(/usr/bin/time -f "%e %U %S %O" "${bins[$i]}" "${config[@]}" \
      --source "$set_dir" --store "$work/store.db" run --once 2>&1 >/dev/null | tail -1)
    walls[$i]+="$wall "
    cpus[$i]+="$(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.2f", u + s}') "
    written[$i]+="$(( blocks / 2048 )) "
  done
done
rm -f "$work"/store.db* "$work/esr.toml"
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
lowest() { tr ' ' '\n' | grep -v '^$' | sort -n | head -1; }
highest() { tr ' ' '\n' | grep -v '^$' | sort -n | tail -1; }
lines=$(( 13 * days * records ))
echo "| binary | runs | median wall | lowest | highest | records/s (median) | median CPU | median written |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for i in "${!bins[@]}"; do
  m=$(echo "${walls[$i]}" | median)
  echo "| ${bins[$i]} | $rounds | $m s | $(echo "${walls[$i]}" | lowest) s | $(echo "${walls[$i]}" | highest) s |" \
    "$(awk -v n="$lines" -v t="$m" 'BEGIN {printf "%d", n / t}') | $(echo "${cpus[$i]}" | median) s |" \
    "$(echo "${written[$i]}" | median) MiB |"
done
