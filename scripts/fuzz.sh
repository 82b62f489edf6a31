#!/usr/bin/env bash
# Fuzzing with cargo-fuzz (libFuzzer), on the stable compiler. Not part of the test run:
# CI replays the committed corpus instead (tests/fuzz_corpus.rs).
#   scripts/fuzz.sh [--seconds N] [TARGET...]
# Targets: file_parser name_parser layout_loader config_loader (default: all, in turn).
# New inputs that widen coverage are kept in fuzz/corpus/TARGET (commit them); a crash
# stops the run and leaves its input in fuzz/artifacts/TARGET. Prints the executions per
# target at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=600
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    -*) echo "usage: $0 [--seconds N] [TARGET...]" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(file_parser name_parser layout_loader config_loader)
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
summary=()
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target"
  log="$(mktemp)"
  echo "== fuzzing $target for ${seconds}s"
  cargo fuzz run -s none "$target" "fuzz/corpus/$target" -- -max_total_time="$seconds" -max_len=65536 2>&1 | tee "$log" | grep -E "^#[0-9]+ +(DONE|pulse)|ERROR|panicked" || true
  status="${PIPESTATUS[0]}"
  execs="$(grep -Eo 'Done [0-9]+ runs' "$log" | grep -Eo '[0-9]+' | tail -1 || true)"
  summary+=("| $target | ${execs:-?} | ${seconds} s | $([ "$status" = 0 ] && echo ok || echo "FAILED (see fuzz/artifacts/$target)") |")
  rm -f "$log"
done
printf '\n| target | executions | time | result |\n| --- | ---: | ---: | --- |\n'
printf '%s\n' "${summary[@]}"
