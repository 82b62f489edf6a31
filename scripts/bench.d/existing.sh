# shellcheck shell=bash disable=SC2034,SC2153 # globals shared with scripts/bench and its other parts
# The measurements of the older scripts, run here beside the new ones: the single big file
# (one generated file of --big-records records), the full file (bench-full-file.sh, called
# as it is), the broker path (bench-broker.sh's pipeline and ceiling, here beside embedded
# runs of the same set), and the rows not measured yet. Sourced by scripts/bench.

section_big_file() {
  local d="$RUN/big" bytes
  rm -rf "$d" && mkdir -p "$d"
  log "big file: one SEV file of $BIG_RECORDS records"
  warn_disk $((BIG_RECORDS * 3 / 10000000 + 1)) "the big file"
  "$BIN" generate --out "$d/inbox" --regions SEV --days 1 --records "$BIG_RECORDS" --seed 7 >/dev/null
  bytes=$(du -sb "$d/inbox" | cut -f1)
  measure_ok "$BIN" --source "$d/inbox" --store "$d/esr.db" run --once
  local counts
  counts=$("$BIN" --source "$d/inbox" --store "$d/esr.db" status --json | PY status-counts)
  echo "## 5a. One big file"
  echo
  echo "Method: \`generate --regions SEV --days 1 --records $BIG_RECORDS --seed 7\` (one file), \`run --once\` into a fresh store, wall time and peak RSS from /usr/bin/time."
  echo
  md_header "run" "records:" "input:" "time:" "records/s:" "peak RSS:" "outcome"
  md_row "one file of $(int_fmt "$BIG_RECORDS") records, \`run --once\`" "$(int_fmt "$BIG_RECORDS")" \
    "$(calc "\"%.1f MiB\", $bytes / 1048576")" "$(secs_fmt "$M_SECS")" "$(rate_fmt "$BIG_RECORDS" "$M_SECS")" "$(mb_fmt "$M_KB")" "$counts"
  rm -rf "$d"
}

section_full_file() {
  local d="$RUN/full-file"
  log "full file: scripts/bench-full-file.sh --records $FULL_FILE_RECORDS"
  warn_disk $((FULL_FILE_RECORDS * 4 / 5000000 + 1)) "the full-file runs"
  echo "## 5b. Full files"
  echo
  echo "Method: \`scripts/bench-full-file.sh --records $FULL_FILE_RECORDS\` as it is (with this binary): a full file (RMF) of N records into an empty store, then a second full file of the region (next day and SEQ, other positions) that turns the records it lacks into tombstones; \`run --once\` each, wall time and peak RSS from \`/usr/bin/time -v\`."
  echo
  ESR_BENCH_BIN="$BIN" bash "$ROOT/scripts/bench-full-file.sh" --records "$FULL_FILE_RECORDS" --workdir "$d" 2> "$RUN/full-file.log" ||
    die "bench-full-file.sh failed: $(tail -n 3 "$RUN/full-file.log")"
  rm -rf "$d"
}

section_broker() {
  local d="$RUN/broker"
  echo "## 5c. Through RabbitMQ"
  echo
  if [ -z "${ESR_BENCH_CEILING_BIN:-}" ] && cargo_allowed; then
    log "broker: building benches/broker_ceiling.rs (cargo bench --no-run)"
    ESR_BENCH_CEILING_BIN=$(cargo bench --locked -q --bench broker_ceiling --no-run --message-format=json 2> "$RUN/ceiling-build.log" |
      python3 "$ROOT/scripts/cargo_executable.py" broker_ceiling) || die "building benches/broker_ceiling.rs failed: $(tail -n 3 "$RUN/ceiling-build.log")"
    [ -x "$ESR_BENCH_CEILING_BIN" ] || die "cargo built no broker_ceiling executable"
  fi

  # The pipeline half of bench-broker.sh with this binary, beside embedded runs of the same
  # set; the ceiling is the bench binary (built above, or ESR_BENCH_CEILING_BIN), or skipped.
  log "broker: RabbitMQ via scripts/servers.sh on port $AMQP_PORT"
  rm -rf "$d" && mkdir -p "$d"
  eval "$(bash "$ROOT/scripts/servers.sh" start "$RUN/servers" rabbitmq 2>> "$RUN/servers.log")"
  local url="$ESR_TEST_AMQP_URL" total per rows=() ceiling_note
  "$BIN" generate --out "$d/inbox" --days "$BROKER_DAYS" --records "$BROKER_RECORDS" --seed 42 >/dev/null
  PY oracle "$d/inbox" "$d/oracle.tsv" > "$d/oracle.json"
  total=$(PY field "$d/oracle.json" record_lines)
  local e_secs e_cpu beam e_all=() e_cpus=() runs
  beam=$(pgrep -f "beam.smp.*$RUN/servers" | head -n 1)
  for per in "$BROKER_BATCH" 1; do
    mkdir -p "$d/p$per"
    cat > "$d/p$per/esr.toml" <<TOML
broker = "$url"
[rabbitmq]
exchange = "benchall$per.x"
queue = "benchall$per.q"
dead_letter_exchange = "benchall$per.dlx"
dead_letter_queue = "benchall$per.dlq"
records_per_message = $per
consumers = 2
prefetch = 256
in_flight = 256
TOML
    # The batched pipeline runs REPEAT times, each beside an embedded run of the same set
    # (the ratio is of the medians); one record per message once (it is the broker's limit).
    runs=1
    [ "$per" = "$BROKER_BATCH" ] && runs=$REPEAT
    local r0 r1 i p_all=() p_cpus=() r_cpus=() p_kb=0
    for ((i = 1; i <= runs; i++)); do
      if [ "$per" = "$BROKER_BATCH" ]; then
        log "broker: embedded run --once of the same set, for the ratio ($i of $runs)"
        rm -rf "$d/embedded.db"*
        measure_ok "$BIN" --source "$d/inbox" --store "$d/embedded.db" run --once
        e_all+=("$M_SECS") e_cpus+=("$M_CPU")
      fi
      log "broker: pipeline, $per records per message ($i of $runs)"
      rm -rf "$d/p$per/store.db"*
      r0=$(cpu_of "$beam")
      measure_ok "$BIN" --config "$d/p$per/esr.toml" --source "$d/inbox" --store "$d/p$per/store.db" run --once
      r1=$(cpu_of "$beam")
      p_all+=("$M_SECS") p_cpus+=("$M_CPU") r_cpus+=("$(calc "\"%.2f\", $r1 - $r0")")
      if [ "$M_KB" -gt "$p_kb" ]; then p_kb=$M_KB; fi
    done
    e_secs=$(median "${e_all[@]}") e_cpu=$(median "${e_cpus[@]}")
    local p_secs p_cpu r_cpu check c_cells
    p_secs=$(median "${p_all[@]}") p_cpu=$(median "${p_cpus[@]}") r_cpu=$(median "${r_cpus[@]}")
    export_state "$d/p$per/store.db" "$d/inbox" "$d/p$per/state.tsv"
    check=$(PY compare "$d/oracle.tsv" "$d/p$per/state.tsv" --short)
    if [ -n "${ESR_BENCH_CEILING_BIN:-}" ]; then
      local messages _records bytes csecs
      read -r messages _records bytes csecs <<< "$("$ESR_BENCH_CEILING_BIN" "$url" "$d/inbox" "$per" 2 256 256 2>/dev/null | tail -n 1)"
      c_cells=("$(int_fmt "$messages") ($(calc "\"%.1f MiB\", $bytes / 1048576"))" "$(secs_fmt "$csecs")" "$(rate_fmt "$total" "$csecs")" \
        "$(calc "\"%.0f %%\", 100 * $csecs / $p_secs")")
    else
      c_cells=("not measured (needs cargo)" "—" "—" "—")
    fi
    rows+=("$(md_row "$per" "$(int_fmt "$total")" "$(secs_fmt "$p_secs")" "$(rate_fmt "$total" "$p_secs")" "$(mb_fmt "$p_kb")" \
      "$(calc "\"%.0f %%\", 100 * $e_secs / $p_secs")" "$(calc "\"%.2f + %.2f s\", $p_cpu, $r_cpu")" \
      "$(calc "\"%.0f %%\", 100 * $e_secs / (($p_cpu + $r_cpu) / $(nproc))")" "${c_cells[@]}" "$check")")
  done
  bash "$ROOT/scripts/servers.sh" stop "$RUN/servers" 2>> "$RUN/servers.log" || true
  if [ -n "${ESR_BENCH_CEILING_BIN:-}" ]; then
    ceiling_note="the ceiling from \`$ESR_BENCH_CEILING_BIN\` (a built \`benches/broker_ceiling.rs\`)"
  else
    ceiling_note="the raw ceiling skipped: it is \`benches/broker_ceiling.rs\`, built by cargo, which this run may not call (\`--no-build\`, or no cargo); set ESR_BENCH_CEILING_BIN to a built one"
  fi
  echo "Method: the pipeline half of \`scripts/bench-broker.sh\` with this binary: 13 regions × $BROKER_DAYS days × $BROKER_RECORDS records (seed 42), \`run --once\` from a folder through RabbitMQ (started by \`scripts/servers.sh\` on 127.0.0.1:$AMQP_PORT) into a fresh SQLite store, 2 consumers, prefetch 256, window 256; $ceiling_note. The batched pipeline runs $REPEAT times, each after an embedded \`run --once\` of the same set into a fresh store; times and CPU are medians (peak RSS the highest). One record per message runs once."
  echo
  echo
  echo "CPU is user + system seconds: esr-ingest (from /usr/bin/time) + the RabbitMQ node (from /proc, over the run); the embedded run took $(calc "\"%.2f\", $e_cpu") CPU-seconds. On this machine's $(nproc) cores a run cannot take less wall time than its CPU ÷ $(nproc), so \"best ÷ embedded\" is the highest ratio the pipeline could reach at that CPU cost, with perfect overlap."
  echo
  md_header "records per message:" "records:" "pipeline:" "pipeline records/s:" "peak RSS:" "÷ embedded rate (same set, $(secs_fmt "$e_secs")):" "CPU (esr-ingest + RabbitMQ):" "best ÷ embedded at that CPU:" "ceiling messages:" "ceiling:" "ceiling records/s:" "pipeline ÷ ceiling rate:" "final state"
  printf '%s\n' "${rows[@]}"
  rm -rf "$d"
}
