# shellcheck shell=bash disable=SC2034,SC2153 # globals shared with scripts/bench and its other parts
# Section "baseline": embedded `run --once` vs a naive SQL baseline vs the floor, on the
# same generated set. Sourced by scripts/bench; prints markdown.

section_baseline() {
  shared_data
  local d="$RUN/baseline" sql="$ROOT/scripts/bench.d/sql"
  rm -rf "$d" && mkdir -p "$d"

  # (a) embedded
  embedded_once "$SET"

  # (b) the naive baseline: a CSV prepared beforehand (not timed), `.import` into a
  # staging table, then one keyed INSERT ... SELECT ... ON CONFLICT DO UPDATE WHERE newer.
  log "baseline: preparing the CSV (not timed)"
  PY csv "$SET/inbox" "$d/lines.csv"
  cd "$d" || return # import.sql names lines.csv relative to it
  log "baseline: sqlite3 .import"
  measure_ok sqlite3 -bail baseline.db < "$sql/import.sql" > /dev/null
  local i_secs=$M_SECS i_kb=$M_KB
  log "baseline: sqlite3 merge"
  measure_ok sqlite3 -bail baseline.db < "$sql/merge.sql" > /dev/null
  local g_secs=$M_SECS g_kb=$M_KB
  cd "$ROOT" || return
  sqlite3 -separator $'\t' "$d/baseline.db" 'SELECT type, key, deleted, d, s, l FROM records' > "$d/baseline.tsv"
  local b_check b_secs b_kb
  b_check=$(check_state "$d/baseline.tsv")
  b_secs=$(calc "\"%.4f\", $i_secs + $g_secs")
  b_kb=$((i_kb > g_kb ? i_kb : g_kb))
  rm -f "$d/lines.csv"

  # (c) the floor (python: read + sha256 + csv split + newest per identity, then the final
  # records only, one SQLite transaction)
  log "floor: python"
  measure_ok python3 "$ROOT/scripts/bench.d/floor.py" "$SET/inbox" "$d/floor.db" > "$d/floor.json"
  local f_secs=$M_SECS f_kb=$M_KB f_check ph_read ph_parse ph_write written
  sqlite3 -separator $'\t' "$d/floor.db" 'SELECT type, key, deleted, d, s, l FROM records' > "$d/floor.tsv"
  f_check=$(check_state "$d/floor.tsv")
  ph_read=$(PY field "$d/floor.json" read_sha256)
  ph_parse=$(PY field "$d/floor.json" parse_newest)
  ph_write=$(PY field "$d/floor.json" write)
  written=$(PY field "$d/floor.json" written)

  local n=$SET_RECORDS
  echo "## 1. Embedded vs naive SQL baseline vs floor"
  echo
  echo "Method: $(int_fmt "$n") record lines ($SET_MIB MiB; 13 regions × $DAYS days × $RECORDS records, \`generate --seed 7\`, $(int_fmt "$SET_IDS") identities), each run into a fresh SQLite file (WAL, synchronous NORMAL, 40 MiB cache); wall time from the shell's clock, peak RSS from /usr/bin/time; the baseline's CSV (type, key, indicator, date, SEQ, line, raw line) is prepared beforehand, not timed; the floor is a python 3 script (csv, hashlib, sqlite3) whose phases it times itself; \"final state\" compares every identity with an oracle computed in python from the files."
  echo
  md_header "run" "what is timed" "records:" "time:" "records/s:" "peak RSS:" "embedded time ÷ this:" "final state"
  md_row "**embedded** \`run --once\`" "discover, sha256, validate, sequence, apply under the version rule, ledger" \
    "$(int_fmt "$n")" "$(secs_fmt "$E_SECS")" "$(rate_fmt "$n" "$E_SECS")" "$(mb_fmt "$E_KB")" "1.00×" "$E_CHECK"
  md_row "baseline: \`.import\`" "\`sqlite3\` \`.import --csv\` into an unindexed staging table" \
    "$(int_fmt "$n")" "$(secs_fmt "$i_secs")" "$(rate_fmt "$n" "$i_secs")" "$(mb_fmt "$i_kb")" "$(ratio_fmt "$E_SECS" "$i_secs")" ""
  md_row "baseline: merge" "one \`INSERT … SELECT … ON CONFLICT(type,key) DO UPDATE … WHERE (d,s,l) > stored\`" \
    "$(int_fmt "$n")" "$(secs_fmt "$g_secs")" "$(rate_fmt "$n" "$g_secs")" "$(mb_fmt "$g_kb")" "$(ratio_fmt "$E_SECS" "$g_secs")" ""
  md_row "**baseline** import + merge" "the two above" \
    "$(int_fmt "$n")" "$(secs_fmt "$b_secs")" "$(rate_fmt "$n" "$b_secs")" "$(mb_fmt "$b_kb")" "**$(ratio_fmt "$E_SECS" "$b_secs")**" "$b_check"
  md_row "floor: read + sha256" "read every file's bytes, sha256" \
    "$(int_fmt "$n")" "$(secs_fmt "$ph_read")" "$(rate_fmt "$n" "$ph_read")" "" "" ""
  md_row "floor: parse + newest" "decode, csv split, keep the newest line per identity (a dict)" \
    "$(int_fmt "$n")" "$(secs_fmt "$ph_parse")" "$(rate_fmt "$n" "$ph_parse")" "" "" ""
  md_row "floor: write" "insert only the $(int_fmt "$written") final records, one transaction" \
    "$(int_fmt "$written")" "$(secs_fmt "$ph_write")" "$(rate_fmt "$written" "$ph_write")" "" "" ""
  md_row "**floor** whole process" "the three above, plus python's start" \
    "$(int_fmt "$n")" "$(secs_fmt "$f_secs")" "$(rate_fmt "$n" "$f_secs")" "$(mb_fmt "$f_kb")" "**$(ratio_fmt "$E_SECS" "$f_secs")**" "$f_check"
  echo
  echo "\"embedded time ÷ this\" above 1× means the embedded run took longer. The baseline and the floor do no validation, sequencing, ledger or full-file handling (each region's full file is its first file here, so the rule removes nothing); the baseline also skips reading and hashing the files (the CSV was ready)."
  rm -rf "$d"
}
