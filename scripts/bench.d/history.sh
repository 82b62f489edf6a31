# shellcheck shell=bash disable=SC2034,SC2153 # globals shared with scripts/bench and its other parts
# Section "history": what a long history costs when nothing is new: an idle `run --once`,
# `status --json` and the health server's pages, against the folder listing floor.
# Sourced by scripts/bench.

# wait_passes URL: waits until the service has finished at least one pass
wait_passes() {
  local i
  for i in $(seq 1 1200); do
    if curl -sf "$1/metrics" 2>/dev/null | grep -Eq '^esr_ingest_passes_total\{[^}]*\} [1-9]'; then return 0; fi
    [ "$i" -lt 1200 ] && sleep 0.25
  done
  die "the service at $1 finished no pass in 5 minutes"
}

# start_service DIR CONFIG_LINE...: `run --listen` over DIR/inbox and DIR/esr.db with these
# config lines, once its first pass is done; sets url and pid
start_service() {
  local h=$1 port
  shift
  printf '%s\n' "$@" > "$h/esr.toml"
  port=$(free_port)
  url="http://127.0.0.1:$port"
  "$BIN" --config "$h/esr.toml" --source "$h/inbox" --store "$h/esr.db" run --listen "127.0.0.1:$port" \
    > "$h/run.log" 2>&1 &
  pid=$!
  remember_pid "$pid"
  wait_passes "$url"
}

pass_seconds() { # URL LISTING -> the service's last pass of that listing, in seconds
  curl -sf "$1/metrics" | sed -n "s/^esr_ingest_last_pass_seconds{listing=\"$2\"} //p" | grep . ||
    die "no $2 pass in the metrics of $1"
}

curl_median() { # URL -> median time_total of REPEAT GETs
  local t=() i
  for i in $(seq 1 "$REPEAT"); do
    t+=("$(curl -sf -o /dev/null -w '%{time_total}' "$1")") || die "GET $1 failed"
  done
  median "${t[@]}"
}

section_history() {
  local d="$RUN/history" n days files rows=() i
  rm -rf "$d" && mkdir -p "$d"
  for n in ${HISTORY//,/ }; do
    days=$(((n * 2 + 13) / 26)) # nearest whole number of days of 13 files
    [ "$days" -ge 1 ] || days=1
    local h="$d/h$n"
    mkdir -p "$h"
    log "history: $n files ($days days x 13 regions x 3 records)"
    "$BIN" generate --out "$h/inbox" --days "$days" --records 3 --start 2012-01-01 --seed 7 >/dev/null
    files=$(find "$h/inbox" -type f | wc -l)
    measure_ok "$BIN" --source "$h/inbox" --store "$h/esr.db" run --once
    local apply=$M_SECS idle=() status=() find_t=() kb=0
    for i in $(seq 1 "$REPEAT"); do
      measure_ok "$BIN" --source "$h/inbox" --store "$h/esr.db" run --once
      idle+=("$M_SECS")
      [ "$M_KB" -gt "$kb" ] && kb=$M_KB
      measure_ok "$BIN" --source "$h/inbox" --store "$h/esr.db" status --json > /dev/null
      status+=("$M_SECS")
      wall find "$h/inbox" -printf '%s %T@\n' > /dev/null
      find_t+=("$W_SECS")
    done
    # the health server: `run` with a long poll interval, so only its first pass runs
    local url pid
    start_service "$h" 'poll_interval = "1h"'
    local s_page m_page root_page
    s_page=$(curl_median "$url/status")
    m_page=$(curl_median "$url/metrics")
    root_page=$(curl_median "$url/")
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    # the service's own passes: its first (full) and then quick ones, from its gauge
    local quick=() full_pass
    start_service "$h" 'poll_interval = "500ms"' 'reconcile_interval = "1h"'
    for i in $(seq 1 "$REPEAT"); do
      sleep 0.7
      quick+=("$(pass_seconds "$url" quick)")
    done
    full_pass=$(pass_seconds "$url" full)
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local idle_m find_m
    idle_m=$(median "${idle[@]}")
    find_m=$(median "${find_t[@]}")
    rows+=("$(md_row "$(int_fmt "$files")" "$(secs_fmt "$apply")" "$(secs_fmt "$idle_m")" "$(mb_fmt "$kb")" \
      "$(secs_fmt "$(median "${status[@]}")")" "$(secs_fmt "$s_page")" "$(secs_fmt "$m_page")" "$(secs_fmt "$root_page")" \
      "$(secs_fmt "$find_m")" "$(ratio_fmt "$idle_m" "$find_m")" "$(secs_fmt "$full_pass")" \
      "$(secs_fmt "$(median "${quick[@]}")")")")
    rm -rf "$h"
  done
  echo "## 3. History: the cost of files already applied"
  echo
  printf '%s\n' "Method: \`generate --days N --records 3 --start 2012-01-01\` (13 files a day), applied by one \`run --once\` (its time shown for reference), then, median of $REPEAT each: an idle \`run --once\` (nothing new), \`status --json\`, and GET \`/status\`, \`/metrics\` and \`/\` from \`run --listen\` (curl's total time, after the service's first pass), against \`find DIR -printf '%s %T@\\n'\` as the floor for listing the folder; and the service's own passes (\`run\` with \`poll_interval = \"500ms\"\`, \`reconcile_interval = \"1h\"\`, from its \`esr_ingest_last_pass_seconds\` gauge): its first pass, a full one, and the median of $REPEAT quick ones (new names and active files only; see the README's \"What each pass reads\")."
  echo
  md_header "files in history:" "first apply (reference):" "idle \`run --once\`:" "its peak RSS:" "\`status --json\`:" "\`/status\`:" "\`/metrics\`:" "\`/\`:" "\`find\` listing:" "idle run ÷ listing:" "service full pass:" "service quick pass:"
  printf '%s\n' "${rows[@]}"
  rm -rf "$d"
}
