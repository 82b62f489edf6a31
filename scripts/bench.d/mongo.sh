# shellcheck shell=bash disable=SC2034,SC2153 # globals shared with scripts/bench and its other parts
# Section "mongo": MongoDB commands per record on the production path. The MongoDB-wire
# server the tests use is not MongoDB and its speed says nothing about MongoDB's, so this
# counts round trips (`esr_ingest_store_commands_total`), not seconds.
# Sourced by scripts/bench.

section_mongo() {
  local d="$RUN/mongo" port url total i state
  rm -rf "$d" && mkdir -p "$d"
  log "mongo: RabbitMQ and the MongoDB-wire server via scripts/servers.sh"
  eval "$(ESR_MONGO_PORT="${ESR_BENCH_MONGO_PORT:-26717}" bash "$ROOT/scripts/servers.sh" start "$RUN/servers-mongo" rabbitmq mongo 2>> "$RUN/servers.log")"
  "$BIN" generate --out "$d/inbox" --days "$MONGO_DAYS" --records "$MONGO_RECORDS" --seed 42 >/dev/null
  total=$((13 * MONGO_DAYS * MONGO_RECORDS))
  local files=$((13 * MONGO_DAYS))
  port=$(free_port)
  url="http://127.0.0.1:$port"
  cat > "$d/esr.toml" <<TOML
broker = "$ESR_TEST_AMQP_URL"
[rabbitmq]
exchange = "benchmongo.x"
queue = "benchmongo.q"
dead_letter_exchange = "benchmongo.dlx"
dead_letter_queue = "benchmongo.dlq"
records_per_message = 100
consumers = 2
prefetch = 256
in_flight = 256
TOML
  log "mongo: $files files, $total records, S3-less folder -> RabbitMQ -> MongoDB-wire store"
  "$BIN" --config "$d/esr.toml" --source "$d/inbox" --store "$ESR_TEST_MONGO_URI/benchmongo" run --listen "127.0.0.1:$port" \
    > "$d/run.log" 2>&1 &
  local pid=$!
  remember_pid "$pid"
  state=""
  for i in $(seq 1 1200); do
    state=$(curl -sf "$url/status" 2>/dev/null | python3 -c 'import json, sys
d = json.load(sys.stdin)
print(d["counts"]["applied_files"], len(d["in_flight"]))' 2>/dev/null || true)
    [ "$state" = "$files 0" ] && break
    sleep 0.5
  done
  [ "$state" = "$files 0" ] || die "mongo: the files were not all applied in 10 minutes (status: $state)"
  curl -sf "$url/metrics" > "$d/metrics.txt"
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  ESR_MONGO_PORT="${ESR_BENCH_MONGO_PORT:-26717}" bash "$ROOT/scripts/servers.sh" stop "$RUN/servers-mongo" 2>> "$RUN/servers.log" || true
  local consumer all records_cmds
  read -r consumer all records_cmds < <(python3 - "$d/metrics.txt" <<'PYEOF'
import re, sys
consumer = all_ = records = 0
for line in open(sys.argv[1]):
    m = re.match(r'esr_ingest_store_commands_total\{command="([^"]+)",collection="([^"]+)"\} (\S+)', line)
    if not m:
        continue
    command, collection, n = m.group(1), m.group(2), float(m.group(3))
    all_ += n
    if collection in ("records", "receipts", "dead_letters"):
        consumer += n
    if collection == "records":
        records += n
print(int(consumer), int(all_), int(records))
PYEOF
)
  echo "## 5d. MongoDB commands per record"
  echo
  echo "Method: \`generate --days $MONGO_DAYS --records $MONGO_RECORDS --seed 42\` ($files files), \`run\` from a folder through RabbitMQ (100 records per message, 2 consumers, prefetch 256) into the MongoDB-wire server the tests use (nx-27017, via \`scripts/servers.sh\`), until \`/status\` shows every file applied; then the store's command counter (\`esr_ingest_store_commands_total\`, from the driver's command monitoring) read from \`/metrics\`. Commands, not seconds: the stand-in's speed is not MongoDB's. \"Records, receipts and dead letters\" are the consumers' writes plus the completion checks that read receipts and dead-letter marks; \"every command\" adds discovery, the ledger journal, leases, alerts and the pass loop of the whole run."
  echo
  md_header "records:" "commands on records:" "on records, receipts and dead letters:" "per 100 records:" "every command:" "per 100 records:"
  md_row "$(int_fmt "$total")" "$(int_fmt "$records_cmds")" "$(int_fmt "$consumer")" "$(calc "\"%.2f\", 100 * $consumer / $total")" \
    "$(int_fmt "$all")" "$(calc "\"%.2f\", 100 * $all / $total")"
  rm -rf "$d"
}
