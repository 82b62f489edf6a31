# shellcheck shell=bash disable=SC2034,SC2153 # globals shared with scripts/bench and its other parts
# Set-up shared by scripts/bench and its sections: the binary, the tools it needs, the
# /usr/bin/time measurement (wall and peak RSS), medians, and markdown table printing.
# Sourced, never run. Expects ROOT (the repository) and RUN (the scratch dir) to be set.

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- tools -------------------------------------------------------------------------------

APT_UPDATED=""
apt_install() { # package...
  command -v apt-get >/dev/null 2>&1 || die "need $* but apt-get is not available"
  if [ -z "$APT_UPDATED" ]; then apt-get update -qq; APT_UPDATED=1; fi
  log "installing $* (apt)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_tools() { # the tools every section uses
  [ -x /usr/bin/time ] || apt_install time
  command -v sqlite3 >/dev/null 2>&1 || apt_install sqlite3
  command -v curl >/dev/null 2>&1 || apt_install curl
  command -v python3 >/dev/null 2>&1 || apt_install python3
}

# The binary: ESR_BENCH_BIN if set, else a release build (the only cargo call here).
resolve_bin() {
  if [ -n "${ESR_BENCH_BIN:-}" ]; then
    BIN="$ESR_BENCH_BIN"
  else
    [ -z "${NO_BUILD:-}" ] || die "--no-build needs ESR_BENCH_BIN (the path of a release esr-ingest)"
    log "building the release binary (cargo build --release --locked)"
    (cd "$ROOT" && cargo build --release --locked -q)
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/esr-ingest"
    case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
  fi
  [ -x "$BIN" ] || die "no executable esr-ingest at $BIN"
  BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")" # the sections change folders
  BIN_VERSION="$("$BIN" --version 2>/dev/null || echo unknown)"
  export BIN
}

# May this run call cargo (for the parts of old scripts that build benches)?
cargo_allowed() { [ -z "${NO_BUILD:-}" ] && command -v cargo >/dev/null 2>&1; }

# The python venv with dlt, kept between runs (it takes a minute to install).
ensure_venv() {
  local spec="${ESR_BENCH_DLT_SPEC:-dlt[duckdb,parquet]==1.31.0}"
  if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import dlt, duckdb, pyarrow' 2>/dev/null; then
    return 0
  fi
  log "creating the venv $VENV with $spec (pip)"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    apt_install python3-venv
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check "$spec" >&2
}

# --- measuring ---------------------------------------------------------------------------

# measure CMD...: runs CMD under /usr/bin/time. Sets M_SECS (wall, from bash's
# microsecond clock), M_KB (peak RSS in KiB), M_CPU (user + system CPU seconds) and M_RC
# (exit code). Never fails itself.
measure() {
  local tf t0 t1
  tf="$(mktemp "$RUN/.time.XXXXXX")"
  M_RC=0
  t0=$EPOCHREALTIME
  /usr/bin/time -f '%M %U %S' -o "$tf" "$@" || M_RC=$?
  t1=$EPOCHREALTIME
  M_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }')
  read -r M_KB M_CPU <<< "$(tail -n 1 "$tf" | awk 'NF == 3 { printf "%s %.2f", $1, $2 + $3 }')"
  case "$M_KB" in '' | *[!0-9]*) M_KB=0 ;; esac
  case "$M_CPU" in '' | *[!0-9.]*) M_CPU=0 ;; esac
  rm -f "$tf"
}

# cpu_of PID: the CPU seconds (user + system) a running process has used so far.
cpu_of() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# measure_ok CMD...: measure, and fail (with the command) when it exits non-zero.
measure_ok() {
  measure "$@"
  [ "$M_RC" -eq 0 ] || die "exit $M_RC from: $*"
}

# wall CMD...: the wall time of CMD in seconds (no RSS), into W_SECS.
wall() {
  local t0 t1
  t0=$EPOCHREALTIME
  "$@"
  t1=$EPOCHREALTIME
  W_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }')
}

median() { # numbers... -> the median
  printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END {
    if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.4f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# --- formatting --------------------------------------------------------------------------

calc() { awk "BEGIN { printf $1 }"; } # calc '"%.1f", 3/2'
int_fmt() { # 1234567 -> 1,234,567
  local n
  n=$(printf '%.0f' "$1")
  echo "$n" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'
}
secs_fmt() { # seconds -> "1.23 s" or "45 ms"
  awk -v s="$1" 'BEGIN { if (s < 1) printf "%.1f ms", s * 1000; else if (s < 100) printf "%.2f s", s; else printf "%.0f s", s }'
}
rate_fmt() { int_fmt "$(calc "\"%.0f\", $1 / ($2 > 0 ? $2 : 1e-9)")"; } # count seconds -> per s
mb_fmt() { calc "\"%.1f MB\", $1 / 1024"; }                             # KiB -> MB (MiB)
ratio_fmt() { calc "\"%.2f×\", $1 / ($2 > 0 ? $2 : 1e-9)"; }            # a b -> a/b

md_row() { # cells... -> | a | b |
  local out="|" c
  for c in "$@"; do out+=" $c |"; done
  printf '%s\n' "$out"
}
md_header() { # titles...; a title ending in ':' is right-aligned
  local titles=() rule=() t
  for t in "$@"; do
    case "$t" in
      *:) titles+=("${t%:}"); rule+=("---:") ;;
      *) titles+=("$t"); rule+=("---") ;;
    esac
  done
  md_row "${titles[@]}"
  md_row "${rule[@]}"
}

# --- data --------------------------------------------------------------------------------

PY() { python3 "$ROOT/scripts/bench.d/esrdata.py" "$@"; }

# warn_disk GIB WHAT: a warning when the scratch file system has less than GIB free
warn_disk() {
  local free
  free=$(df -Pk "$RUN" | awk 'NR == 2 { printf "%d", $4 / 1048576 }')
  [ "$free" -ge "$1" ] || log "warning: $2 wants about $1 GiB of scratch space; $free GiB free under $RUN"
}

# fresh_store PATH: removes a SQLite store and its side files.
fresh_store() { rm -f "$1" "$1-wal" "$1-shm" "$1.lock"; }

# gen_set DAYS RECORDS: a generated set (13 regions x DAYS x RECORDS, seed 7) with its
# oracle, made once per run and shared by the sections. Sets SET (its folder, with inbox/
# and oracle.tsv), SET_RECORDS (record lines), SET_IDS (identities) and SET_MIB.
gen_set() {
  SET="$RUN/set-d$1-r$2"
  if [ ! -f "$SET/oracle.json" ]; then
    log "generating 13 regions x $1 days x $2 records (seed 7) and its oracle"
    rm -rf "$SET" && mkdir -p "$SET"
    "$BIN" generate --out "$SET/inbox" --days "$1" --records "$2" --seed 7 >/dev/null
    PY oracle "$SET/inbox" "$SET/oracle.tsv" > "$SET/oracle.json"
  fi
  SET_RECORDS=$(PY field "$SET/oracle.json" record_lines)
  SET_IDS=$(PY field "$SET/oracle.json" identities)
  SET_MIB=$(du -sb "$SET/inbox" | awk '{ printf "%.1f", $1 / 1048576 }')
}
shared_data() { gen_set "$DAYS" "$RECORDS"; }

# embedded_once SET_DIR: `run --once` of a set's folder into a fresh store, measured once
# per run and set (the sections share it). Sets E_SECS, E_KB, E_CHECK.
embedded_once() {
  local d="$1/embedded"
  if [ ! -f "$d/result" ]; then
    mkdir -p "$d"
    fresh_store "$d/esr.db"
    log "embedded: run --once of $1/inbox"
    measure_ok "$BIN" --source "$1/inbox" --store "$d/esr.db" run --once
    export_state "$d/esr.db" "$1/inbox" "$d/state.tsv"
    printf '%s %s %s\n' "$M_SECS" "$M_KB" "$(PY compare "$1/oracle.tsv" "$d/state.tsv" --short)" > "$d/result"
  fi
  read -r E_SECS E_KB E_CHECK < "$d/result"
}

# check_state TSV: compares a state dump with the current set's oracle -> "= oracle" or
# "N of M wrong (x %)"
check_state() { PY compare "$SET/oracle.tsv" "$1" --short; }

# export_state STORE SOURCE OUT.tsv: an esr-ingest store as a state dump
export_state() {
  "$BIN" --source "$2" --store "$1" export --output "$3.jsonl"
  PY state-esr "$3.jsonl" "$3"
  rm -f "$3.jsonl"
}

# record a background process to stop at exit (only processes this script started)
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

remember_pid() { echo "$1" >> "$RUN/pids"; }
