# shellcheck shell=bash disable=SC2034,SC2153 # globals shared with scripts/bench and its other parts
# Section "peer": dlt (PyPI, DuckDB destination) on the same files: throughput with its
# default loader file format and with parquet, then correctness when files arrive out of
# order, for esr-ingest and dlt against the oracle. Sourced by scripts/bench.

peer_env() {
  export RUNTIME__DLTHUB_TELEMETRY=false RUNTIME__LOG_LEVEL=WARNING
  PEER_PY="$VENV/bin/python"
  DLT_VERSION=$("$PEER_PY" -c 'import dlt; print(dlt.__version__)')
}

# peer_load SET_DIR FORMAT OUT_DIR: one dlt load of the whole set. Sets P_SECS (process),
# P_INNER (inside pipeline.run), P_KB, P_CHECK.
peer_load() {
  local dir=$3
  rm -rf "$dir" && mkdir -p "$dir"
  log "dlt: one load of $1/inbox, loader file format $2"
  cd "$dir" || return
  measure "$PEER_PY" "$ROOT/scripts/bench.d/peer.py" load "$1/inbox" --db peer.duckdb --dir pipelines \
    --layout "$ROOT/schemas/esr-rmt.toml" --format "$2" --state state.tsv > out.json 2> err.log
  cd "$ROOT" || return
  local rc=$M_RC
  P_SECS=$M_SECS P_KB=$M_KB
  if [ "$rc" -ne 0 ]; then
    P_INNER="" P_CHECK="failed (exit $rc: $(tail -n 1 "$dir/err.log" | cut -c1-120))"
  else
    P_INNER=$(PY field "$dir/out.json" seconds)
    P_CHECK=$(PY compare "$1/oracle.tsv" "$dir/state.tsv" --short)
  fi
  rm -rf "$dir"
}

# esr_batches SET_DIR PLAN OUT_DIR: esr-ingest, files copied into a fresh folder batch by
# batch with `run --once` after each. Sets S_SECS (sum of the runs) and writes state.tsv.
esr_batches() {
  local src=$1 plan=$2 dir=$3 names n
  rm -rf "$dir" && mkdir -p "$dir/inbox"
  S_SECS=0
  while read -r -a names <&3; do
    for n in "${names[@]}"; do cp "$src/inbox/$n" "$dir/inbox/$n"; done
    measure_ok "$BIN" --source "$dir/inbox" --store "$dir/esr.db" run --once < /dev/null
    S_SECS=$(calc "\"%.4f\", $S_SECS + $M_SECS")
  done 3< "$plan"
  export_state "$dir/esr.db" "$dir/inbox" "$dir/state.tsv"
}

# dlt_batches SET_DIR PLAN OUT_DIR: one dlt load (parquet) per batch into one DuckDB file.
dlt_batches() {
  local src=$1 plan=$2 dir=$3
  rm -rf "$dir" && mkdir -p "$dir"
  (cd "$dir" && "$PEER_PY" "$ROOT/scripts/bench.d/peer.py" batches "$src/inbox" --db peer.duckdb --dir pipelines \
    --layout "$ROOT/schemas/esr-rmt.toml" --format parquet --plan "$plan" --state state.tsv > out.json 2> err.log) ||
    die "dlt batches failed: $(tail -n 3 "$dir/err.log")"
  D_SECS=$(PY field "$dir/out.json" seconds)
}

section_peer() {
  ensure_venv
  peer_env
  local d="$RUN/peer" rows=() e_set p_set q_set
  rm -rf "$d" && mkdir -p "$d"

  # throughput: esr-ingest and dlt (parquet) on the peer set, dlt's default format on its own
  # (possibly smaller) set
  gen_set "$DAYS" "$PEER_RECORDS"
  p_set=$SET
  embedded_once "$p_set"
  e_set="13 × $DAYS × $PEER_RECORDS"
  rows+=("$(md_row "esr-ingest \`run --once\` (embedded, SQLite)" "$e_set" "$(int_fmt "$SET_RECORDS")" "$(secs_fmt "$E_SECS")" "—" \
    "$(rate_fmt "$SET_RECORDS" "$E_SECS")" "$(mb_fmt "$E_KB")" "$E_CHECK")")
  peer_load "$p_set" parquet "$d/load-parquet"
  rows+=("$(md_row "dlt $DLT_VERSION → DuckDB, parquet" "$e_set" "$(int_fmt "$SET_RECORDS")" "$(secs_fmt "$P_SECS")" \
    "${P_INNER:+$(secs_fmt "$P_INNER")}" "$(rate_fmt "$SET_RECORDS" "$P_SECS")" "$(mb_fmt "$P_KB")" "$P_CHECK")")
  gen_set "$DAYS" "$PEER_DEFAULT_RECORDS"
  q_set=$SET
  peer_load "$q_set" default "$d/load-default"
  rows+=("$(md_row "dlt $DLT_VERSION → DuckDB, default format (insert_values)" "13 × $DAYS × $PEER_DEFAULT_RECORDS" \
    "$(int_fmt "$SET_RECORDS")" "$(secs_fmt "$P_SECS")" "${P_INNER:+$(secs_fmt "$P_INNER")}" "$(rate_fmt "$SET_RECORDS" "$P_SECS")" \
    "$(mb_fmt "$P_KB")" "$P_CHECK")")
  if [ "$q_set" != "$p_set" ]; then
    embedded_once "$q_set"
    rows+=("$(md_row "esr-ingest \`run --once\` (embedded, SQLite)" "13 × $DAYS × $PEER_DEFAULT_RECORDS" "$(int_fmt "$SET_RECORDS")" \
      "$(secs_fmt "$E_SECS")" "—" "$(rate_fmt "$SET_RECORDS" "$E_SECS")" "$(mb_fmt "$E_KB")" "$E_CHECK")")
  fi

  echo "## 2. The peer: dlt"
  echo
  echo "Method: the same generated files loaded by dlt $DLT_VERSION (PyPI, \`dlt[duckdb,parquet]\`, in the bench venv) into a fresh DuckDB file, in one \`pipeline.run\` of one resource yielding a row per record line (fields named by schemas/esr-rmt.toml, plus the version), with \`write_disposition\` merge (delete-insert), \`primary_key=(record_type, position_id)\`, \`dedup_sort: desc\` on the version and \`hard_delete\` on the \`D\` indicator; \"process\" is the whole python process under /usr/bin/time (import of dlt included), \"inside dlt\" is \`pipeline.run\` alone; records/s from the process time."
  echo
  md_header "loader" "data (regions × days × records)" "records:" "process:" "inside dlt:" "records/s:" "peak RSS:" "final state"
  printf '%s\n' "${rows[@]}"
  echo
  if [ "$PEER_DEFAULT_RECORDS" != "$PEER_RECORDS" ]; then
    echo "The default format runs on a smaller set (13 × $DAYS × $PEER_DEFAULT_RECORDS): dlt writes the load as SQL \`INSERT … VALUES\` text that DuckDB parses, and its time and memory grow faster than the data (when this script was written, 78,000 records took 50 s and 4.3 GB of peak RSS against 6 s and 0.3 GB with parquet), so the full set would take many minutes and could exhaust memory."
    echo
  fi

  # correctness under out-of-order delivery (on its own, possibly smaller, set)
  gen_set "$DAYS" "$ORDER_RECORDS"
  p_set=$SET
  local scen rows2=() plan n_batches desc
  for scen in ${SCENARIOS//,/ }; do
    plan="$d/$scen.plan"
    PY plan "$p_set/inbox" "$scen" 7 > "$plan"
    n_batches=$(wc -l < "$plan")
    log "out of order: scenario $scen ($n_batches batches), esr-ingest"
    esr_batches "$p_set" "$plan" "$d/esr-$scen"
    local e_wrong e_time=$S_SECS
    e_wrong=$(PY compare "$p_set/oracle.tsv" "$d/esr-$scen/state.tsv" --short)
    log "out of order: scenario $scen, dlt"
    dlt_batches "$p_set" "$plan" "$d/dlt-$scen"
    local p_wrong p_detail
    p_wrong=$(PY compare "$p_set/oracle.tsv" "$d/dlt-$scen/state.tsv" --short)
    p_detail=$(PY compare "$p_set/oracle.tsv" "$d/dlt-$scen/state.tsv" | python3 -c 'import json,sys; o=json.load(sys.stdin); print(", ".join(f"{k} {o[k]:,}" for k in ("stale","resurrected","missing","newer","extra") if o[k]) or "—")')
    case "$scen" in
      inorder) desc="in order: one batch per day, days 1 to $DAYS (control)" ;;
      late) desc="late: day $(((DAYS + 1) / 2)) held back and sent after the last day" ;;
      replay) desc="replay: days 1 to $DAYS in order, then day $(((DAYS + 1) / 2)) re-sent (same bytes)" ;;
      shuffle) desc="shuffled: the $DAYS days in a random order (seed 7): $(PY plan "$p_set/inbox" shuffle 7 --days)" ;;
      *) desc=$scen ;;
    esac
    rows2+=("$(md_row "$desc" "$n_batches" "$e_wrong" "$(secs_fmt "$e_time")" "$p_wrong" "$p_detail" "$(secs_fmt "$D_SECS")")")
    rm -rf "$d/esr-$scen" "$d/dlt-$scen"
  done
  echo "Method: $(int_fmt "$SET_RECORDS") record lines (13 regions × $DAYS days × $ORDER_RECORDS records, seed 7; $(int_fmt "$SET_IDS") identities$([ "$ORDER_RECORDS" != "$RECORDS" ] && echo ", smaller than the full set so that dlt's load per batch, about 1–3 s each, keeps the section within minutes")) delivered in batches of one day (13 files; day 1 is the regions' full files); esr-ingest gets a fresh folder and store, the batch's files are copied in and \`run --once\` runs after each batch (time: the runs added up); dlt gets one \`pipeline.run\` per batch (parquet) into one DuckDB file (time: the loads added up, import excluded); each final state is compared with the oracle (newest version per identity, tombstones included) and an identity is wrong when its visible state (absent/deleted, or live with a given version) differs."
  echo
  md_header "delivery order" "batches:" "esr-ingest: wrong identities" "esr-ingest time:" "dlt: wrong identities" "dlt: how they are wrong" "dlt time:"
  printf '%s\n' "${rows2[@]}"
  echo
  echo "dlt hint used: \`dedup_sort: desc\` on the version column (with \`primary_key\` and the default delete-insert merge). It picks the newest row per key *within one load* only; the merge then deletes and replaces the stored row whatever its version, so an older batch loaded later overwrites newer data (\"stale\"), brings deleted records back (\"resurrected\") or deletes live ones (\"missing\"). dlt $DLT_VERSION has no hint that compares a loaded row's version with the stored one (\`merge_key\` only widens the delete; upsert's \`row_version_column_name\` is an equality check for \`skip_unchanged_rows\`)."
  rm -rf "$d"
}
