#!/usr/bin/env bash
# Compares built esr-ingest binaries on the embedded backlog (not part of the test run).
#
# On a shared machine one timing says little: the same binary varies by 10-20 % from one
# minute to the next. This runs the binaries in turn, ROUNDS times, each `run --once` of
# the same generated set (13 regions x DAYS x RECORDS, seed 7) into a fresh SQLite store,
# and prints the median, the lowest and the highest wall time of each, with its median
# CPU (user + system). Compare the medians of one run of this script, never across runs.
#   scripts/bench-ab.sh [--rounds N] [--days N] [--records N] [--workdir DIR] BIN [BIN...]
set -euo pipefail
rounds=9 days=30 records=2000
work="${TMPDIR:-/tmp}/esr-ingest-bench-ab"
bins=()
usage() {
  echo "usage: $0 [--rounds N] [--days N] [--records N] [--workdir DIR] BIN [BIN...]" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in
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
declare -A walls cpus
for _ in $(seq "$rounds"); do
  for i in "${!bins[@]}"; do
    rm -f "$work"/store.db*
    # wall, user, system seconds of one run
    read -r wall user sys < <(/usr/bin/time -f "%e %U %S" "${bins[$i]}" --source "$set_dir" \
      --store "$work/store.db" run --once 2>&1 >/dev/null | tail -1)
    walls[$i]+="$wall "
    cpus[$i]+="$(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.2f", u + s}') "
  done
done
rm -f "$work"/store.db*
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
lowest() { tr ' ' '\n' | grep -v '^$' | sort -n | head -1; }
highest() { tr ' ' '\n' | grep -v '^$' | sort -n | tail -1; }
lines=$(( 13 * days * records ))
echo "| binary | runs | median wall | lowest | highest | records/s (median) | median CPU |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for i in "${!bins[@]}"; do
  m=$(echo "${walls[$i]}" | median)
  echo "| ${bins[$i]} | $rounds | $m s | $(echo "${walls[$i]}" | lowest) s | $(echo "${walls[$i]}" | highest) s |" \
    "$(awk -v n="$lines" -v t="$m" 'BEGIN {printf "%d", n / t}') | $(echo "${cpus[$i]}" | median) s |"
done
