# shellcheck shell=bash disable=SC2034,SC2153 # globals shared with scripts/bench and its other parts
# Section "latency": from a file landing in S3 to its records applied, with S3 event
# notifications and with polling (scripts/bench.d/latency.py does the timing).
# Sourced by scripts/bench.

section_latency() {
  local d="$RUN/latency" events polling
  rm -rf "$d" && mkdir -p "$d"
  ensure_venv
  "$VENV/bin/python" -c 'import boto3, pika' 2>/dev/null ||
    "$VENV/bin/pip" install -q --disable-pip-version-check boto3 pika >&2
  log "latency: the S3-compatible server and RabbitMQ via scripts/servers.sh"
  local servers
  export ESR_S3_PORT="${ESR_BENCH_S3_PORT:-26900}"
  # the section runs in a subshell of its own: this stops its servers however it ends
  trap 'bash "$ROOT/scripts/servers.sh" stop "$RUN/servers-latency" 2>> "$RUN/servers.log" || true' EXIT
  servers=$(bash "$ROOT/scripts/servers.sh" start "$RUN/servers-latency" s3 rabbitmq 2>> "$RUN/servers.log") ||
    die "latency: the servers did not start (see $RUN/servers.log)"
  eval "$servers"
  log "latency: $LATENCY_FILES files with S3 events, $LATENCY_POLL_FILES polling every 10 s"
  events=$("$VENV/bin/python" "$ROOT/scripts/bench.d/latency.py" --bin "$BIN" --work "$d/events" --mode events \
    --files "$LATENCY_FILES")
  polling=$("$VENV/bin/python" "$ROOT/scripts/bench.d/latency.py" --bin "$BIN" --work "$d/polling" --mode polling \
    --files "$LATENCY_POLL_FILES")
  echo "## 6. Latency: a file landing to its records applied"
  echo
  printf '%s\n' "Method: \`run\` over an \`s3://\` prefix of the S3-compatible server of \`scripts/servers.sh\`, SQLite store, one file of 100 records at a time after a random pause (up to 1 s with events; up to the poll interval, 10 s, when polling, so uploads land anywhere in its cycle); from the upload's reply to \`/status\` first counting it applied (polled every 5 ms). With events: the MinIO-shaped notification is published to the events exchange right after the upload (\`[s3] events_queue\`, \`reconcile_interval = \"1h\"\`), so a pass looks up the key notified. Polling: the default \`poll_interval\` (10 s). p99 of so few files is close to the maximum, shown beside it."
  echo
  md_header "mode" "files" "p50" "p99" "max"
  local json
  for json in "$events" "$polling"; do
    read -r mode files p50 p99 max < <(python3 -c 'import json, sys
d = json.loads(sys.argv[1])
print(d["mode"], d["files"], d["p50"], d["p99"], d["max"])' "$json")
    md_row "$mode" "$files" "$(secs_fmt "$p50")" "$(secs_fmt "$p99")" "$(secs_fmt "$max")"
  done
}
