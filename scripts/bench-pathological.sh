#!/usr/bin/env bash
# Peak RSS for pathological inputs of a given size (default 1 GiB each), one file per
# run into a fresh store, release build. Not part of the test run. Prints a table and
# the outcome of each file (quarantine reason or records applied).
#   scripts/bench-pathological.sh [--size-mib N] [--workdir DIR]
# Inputs:
#   blank-flood      a valid file with N MiB of blank lines between its two records
#   crlf-flood       N MiB of CRLF blank lines and nothing else
#   open-quote       a record whose quoted field opens and runs to the end of the file
#   one-huge-line    a header, then one N MiB line with no line end
#   lone-cr-flood    a valid header, then N MiB of CR bytes (no LF)
#   many-fields      a header, then N MiB of lines holding 50,000 empty fields each
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=1024
work="${TMPDIR:-/tmp}/esr-ingest-pathological"
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mib) size_mib="$2"; shift 2 ;;
    --workdir) work="$2"; shift 2 ;;
    *) echo "usage: $0 [--size-mib N] [--workdir DIR]" >&2; exit 2 ;;
  esac
done
if [ ! -x /usr/bin/time ]; then
  apt-get update -qq && apt-get install -y -qq time >/dev/null
fi
# ESR_BENCH_BIN runs another build (peak RSS barely depends on the build profile).
if [ -n "${ESR_BENCH_BIN:-}" ]; then
  bin="$ESR_BENCH_BIN"
else
  cargo build --release --locked -q
  bin="${CARGO_TARGET_DIR:-$PWD/target}/release/esr-ingest"
fi
rm -rf "$work" && mkdir -p "$work"

make_input() { # kind, path
  python3 - "$1" "$2" "$size_mib" <<'PY'
import sys
kind, path, mib = sys.argv[1], sys.argv[2], int(sys.argv[3])
hdr = b"HDR,RMC,SEV,20220730,00000001\n"
por = lambda k, t: ("POR,%d,,C,42,%s,DPN1,SEV,Y,RA7,1234,Org,Loc\n" % (k, t)).encode()
fillers = {
    "blank-flood": (hdr + por(1, "before"), b"\n", por(2, "after") + b"TRL,2\n"),
    "crlf-flood": (b"", b"\r\n", b""),
    "open-quote": (hdr + b'POR,1,,C,42,"open', b"x\n", b""),
    "one-huge-line": (hdr, b"y", b""),
    "lone-cr-flood": (hdr, b"\r", b""),
    "many-fields": (hdr, b"," * 49999 + b"\n", b""),
}
head, filler, tail = fillers[kind]
chunk = filler * max(1, (1 << 20) // len(filler))
with open(path, "wb") as f:
    f.write(head)
    written = 0
    while written < mib << 20:
        f.write(chunk)
        written += len(chunk)
    f.write(tail)
PY
}

printf '| input | size | time | peak RSS | outcome |\n| --- | ---: | ---: | ---: | --- |\n'
for kind in blank-flood crlf-flood open-quote one-huge-line lone-cr-flood many-fields; do
  dir="$work/$kind" && mkdir -p "$dir/inbox"
  file="$dir/inbox/DE_SEV_RMC_20220730_00000001.DAT"
  make_input "$kind" "$file"
  bytes=$(stat -c %s "$file")
  ESR_INGEST_LOG=warn /usr/bin/time -f '%e %M' -o "$dir/time" \
    "$bin" --source "$dir/inbox" --store "$dir/state.db" run --once 2>"$dir/log" || true
  read -r secs kib < "$dir/time"
  outcome=$("$bin" --source "$dir/inbox" --store "$dir/state.db" status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
q = s["quarantined"]
print(q[0]["reason"][:70] if q else "applied %d records" % s["counts"]["records_applied"])')
  awk -v n="$kind" -v b="$bytes" -v s="$secs" -v kb="$kib" -v o="$outcome" 'BEGIN {
    printf "| %s | %.0f MiB | %.1f s | %.1f MB | %s |\n", n, b/1048576, s, kb/1024, o }'
  rm -f "$file"
done
