# shellcheck shell=bash disable=SC2034,SC2153 # globals shared with scripts/bench and its other parts
# Section "history-mongo": what a long history costs on the MongoDB store when nothing is
# new. The MongoDB-wire server the tests use is not MongoDB (it scans where MongoDB uses
# the indexes), so this counts what the code asks for: commands sent and documents
# returned, per `status` and per pass of the service; the stand-in's times are shown for
# reference only. Sourced by scripts/bench.

section_history_mongo() {
  local d="$RUN/history-mongo" n days rows=() i
  rm -rf "$d" && mkdir -p "$d"
  ensure_venv
  "$VENV/bin/python" -c 'import pymongo' 2>/dev/null ||
    "$VENV/bin/pip" install -q --disable-pip-version-check pymongo >&2
  log "history-mongo: the MongoDB-wire server via scripts/servers.sh"
  local servers
  export ESR_MONGO_PORT="${ESR_BENCH_MONGO_PORT:-26717}"
  # the section runs in a subshell of its own: this stops its server however it ends
  trap 'bash "$ROOT/scripts/servers.sh" stop "$RUN/servers-history-mongo" 2>> "$RUN/servers.log" || true' EXIT
  servers=$(bash "$ROOT/scripts/servers.sh" start "$RUN/servers-history-mongo" mongo 2>> "$RUN/servers.log") ||
    die "history-mongo: the server did not start (see $RUN/servers.log)"
  eval "$servers"
  local trace="esr_ingest::service=debug,esr_ingest::store::commands=trace"
  for n in ${HISTORY_MONGO//,/ }; do
    days=$(((n * 2 + 13) / 26))
    [ "$days" -ge 1 ] || days=1
    local h="$d/h$n" store="$ESR_TEST_MONGO_URI/history$n"
    mkdir -p "$h"
    log "history-mongo: $n files ($days days x 13 regions x 3 records)"
    "$BIN" generate --out "$h/inbox" --days "$days" --records 3 --start 2012-01-01 --seed 7 >/dev/null
    local files
    files=$(find "$h/inbox" -type f | wc -l)
    measure_ok "$BIN" --source "$h/inbox" --store "$store" run --once
    local apply=$M_SECS
    "$VENV/bin/python" "$ROOT/scripts/bench.d/backdate.py" "$ESR_TEST_MONGO_URI" "history$n"
    ESR_INGEST_LOG=$trace "$BIN" --log-format json --source "$h/inbox" --store "$store" status --json \
      > /dev/null 2> "$h/status.log" || die "history-mongo: status failed (see $h/status.log)"
    # the service: a full pass, then quick ones every 500 ms; stopped after REPEAT + 2 passes
    printf '%s\n' 'poll_interval = "500ms"' 'reconcile_interval = "1h"' > "$h/esr.toml"
    ESR_INGEST_LOG=$trace "$BIN" --log-format json --config "$h/esr.toml" --source "$h/inbox" --store "$store" \
      run --listen "127.0.0.1:$(free_port)" > /dev/null 2> "$h/run.log" &
    local pid=$!
    remember_pid "$pid"
    local seen
    for i in $(seq 1 1200); do
      seen=$(grep -c '"message":"pass over"' "$h/run.log" 2>/dev/null || true)
      [ "${seen:-0}" -ge $((REPEAT + 2)) ] && break
      sleep 0.25
    done
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local s r
    s=$(python3 "$ROOT/scripts/bench.d/store_commands.py" "$h/status.log")
    r=$(python3 "$ROOT/scripts/bench.d/store_commands.py" "$h/run.log")
    rows+=("$(python3 - "$files" "$apply" "$s" "$r" <<'PYEOF'
import json, sys
files, apply, s, r = int(sys.argv[1]), float(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
def ms(x): return f"{x * 1000:.0f} ms"
def spread(part, key):  # the median, and the range when the passes differ
    if key not in part: return "-"
    low, high = part[f"{key}_range"]
    return f"{part[key]:g}" if low == high else f"{part[key]:g} ({low}–{high})"
full, quick = r.get("full", {}), r.get("quick", {})
cells = [f"{files:,}", f"{apply:.1f} s",
         str(s["total"]["commands"]), str(s["total"]["documents"]), ms(s["total"]["micros"] / 1e6),
         str(full.get("commands", "-")), str(full.get("documents", "-")),
         spread(quick, "commands"), spread(quick, "documents"), ms(quick.get("seconds", 0))]
print("| " + " | ".join(cells) + " |")
PYEOF
)")
    rm -rf "$h"
  done
  echo "## 3b. History on the MongoDB store: commands and documents"
  echo
  printf '%s\n' "Method: as section 3 (\`generate --days N --records 3 --start 2012-01-01\`, one \`run --once\`), into the MongoDB-wire server the tests use (nx-27017 via \`scripts/servers.sh\`); then each file's arrival time is set to its date (\`scripts/bench.d/backdate.py\`), as if the history had arrived over the years its names say. Counted from the store's command trace (\`ESR_INGEST_LOG=esr_ingest::store::commands=trace\`): the commands \`status --json\` sends and the documents they return, and the same for the service's first (full) pass and the median of quick passes (\`poll_interval = \"500ms\"\`, \`reconcile_interval = \"1h\"\`), with their range when they differ: a pass's share includes what the service did since the pass before, the alert check and, when it fell there, the lease keeper's renewal of every region's lease (every third of \`lease_ttl\`), so a pass that takes longer on the stand-in carries it more often. The stand-in scans where MongoDB uses an index, so its times (shown for reference) grow with the history while the commands and documents do not."
  echo
  md_header "files in history:" "first apply (reference):" "\`status\` commands:" "\`status\` documents:" "\`status\` time on the stand-in:" "full pass commands:" "full pass documents:" "quick pass commands:" "quick pass documents:" "quick pass time on the stand-in:"
  printf '%s\n' "${rows[@]}"
  rm -rf "$d"
}
