# shellcheck shell=bash disable=SC2034,SC2153 # globals shared with scripts/bench and its other parts
# Section "backfill": `backfill --from D --to D` of the whole generated set into an empty
# store, beside `run --once` of the same files. Sourced by scripts/bench.

section_backfill() {
  shared_data
  embedded_once "$SET"
  local d="$RUN/backfill" from to
  rm -rf "$d" && mkdir -p "$d"
  read -r from to <<< "$(PY dates "$SET/inbox")"
  log "backfill --from $from --to $to"
  measure_ok "$BIN" --source "$SET/inbox" --store "$d/esr.db" backfill --from "$from" --to "$to" > "$d/summary.txt" 2> "$d/err.log"
  local b_secs=$M_SECS b_kb=$M_KB check
  export_state "$d/esr.db" "$SET/inbox" "$d/state.tsv"
  check=$(check_state "$d/state.tsv")
  echo "## 4. Backfill"
  echo
  echo "Method: \`backfill --from $from --to $to\` (every file of the set: $(int_fmt "$SET_RECORDS") record lines, 13 regions × $DAYS days × $RECORDS records, seed 7) into an empty store, wall time and peak RSS from /usr/bin/time, beside \`run --once\` of the same folder into another empty store (section 1's run when both run)."
  echo
  md_header "command" "records:" "time:" "records/s:" "peak RSS:" "÷ \`run --once\` time:" "final state"
  md_row "\`backfill --from $from --to $to\`" "$(int_fmt "$SET_RECORDS")" "$(secs_fmt "$b_secs")" "$(rate_fmt "$SET_RECORDS" "$b_secs")" \
    "$(mb_fmt "$b_kb")" "$(ratio_fmt "$b_secs" "$E_SECS")" "$check"
  md_row "\`run --once\`" "$(int_fmt "$SET_RECORDS")" "$(secs_fmt "$E_SECS")" "$(rate_fmt "$SET_RECORDS" "$E_SECS")" \
    "$(mb_fmt "$E_KB")" "1.00×" "$E_CHECK"
  rm -rf "$d"
}
