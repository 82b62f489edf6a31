#!/usr/bin/env bash
# A full file of N records (default 5,000,000) reconciling a region that holds as many:
# records/s and peak RSS of `run --once`, embedded mode (folder + SQLite), release build.
# Not part of the test run. Prints a table.
#   scripts/bench-full-file.sh [--records N] [--workdir DIR]
# Steps: a first full file (RMF) is applied into an empty store; then a second full file
# of the region, the next day and SEQ, drawn with another seed, so part of the first
# file's positions are absent from it and become tombstones.
set -euo pipefail
cd "$(dirname "$0")/.."
records=5000000
work="${TMPDIR:-/tmp}/esr-ingest-full-file"
while [ $# -gt 0 ]; do
  case "$1" in
    --records) records="$2"; shift 2 ;;
    --workdir) work="$2"; shift 2 ;;
    *) echo "usage: $0 [--records N] [--workdir DIR]" >&2; exit 2 ;;
  esac
done
if [ ! -x /usr/bin/time ]; then
  apt-get update -qq && apt-get install -y -qq time >/dev/null
fi
if [ -n "${ESR_BENCH_BIN:-}" ]; then
  bin="$ESR_BENCH_BIN"
else
  cargo build --release --locked -q
  bin="${CARGO_TARGET_DIR:-$PWD/target}/release/esr-ingest"
fi
rm -rf "$work" && mkdir -p "$work/inbox" "$work/gen"

"$bin" generate --out "$work/inbox" --regions SEV --days 1 --start 2022-07-30 --records "$records" --seed 1 >/dev/null
first="$(ls "$work/inbox")"
seq="${first##*_}"; seq="${seq%.DAT}"
next=$(printf '%08d' $((10#$seq + 1)))
# The second full file: another seed (other positions), renamed to the next day and SEQ.
"$bin" generate --out "$work/gen" --regions SEV --days 1 --start 2022-07-31 --records "$records" --seed 2 >/dev/null
second="DE_SEV_RMF_20220731_${next}.DAT"
{ echo "HDR,RMF,SEV,20220731,${next}"; tail -n +2 "$work/gen"/*.DAT; } > "$work/gen.tmp"
rm -rf "$work/gen"

run() { # label
  local out="$work/$1.time"
  (cd "$work" && /usr/bin/time -v "$bin" --source inbox --store store.db run --once 2>"$out" >/dev/null)
  local secs rss
  secs="$(grep 'Elapsed (wall clock)' "$out" | awk '{print $NF}' | awk -F: '{ if (NF == 3) print $1*3600 + $2*60 + $3; else print $1*60 + $2 }')"
  rss="$(grep 'Maximum resident set size' "$out" | awk '{print $NF}')"
  printf '| %s | %s | %.1f s | %s records/s | %.1f MB |\n' "$1" "$records" "$secs" \
    "$(python3 -c "print(f'{$records / $secs:,.0f}')")" "$(python3 -c "print($rss / 1000)")"
}

echo "| step | record lines | wall time | throughput | peak RSS |"
echo "| --- | ---: | ---: | ---: | ---: |"
run "first full file (empty store)"
mv "$work/gen.tmp" "$work/inbox/$second"
run "second full file (sweeps the region)"
removed="$(cd "$work" && "$bin" --source inbox --store store.db status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["counts"]["records_removed"])')"
live="$(cd "$work" && "$bin" --source inbox --store store.db export | grep -c '"deleted":false' || true)"
echo
echo "records removed by the second full file: $removed; live records after it: $live"
echo "files: $(du -sh "$work/inbox" | cut -f1) of input, store $(du -sh "$work/store.db" | cut -f1)"
