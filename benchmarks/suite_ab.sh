#!/bin/bash
# One pass of make test before and after a change, A/B, with a warm cache.
#
#   BASE=c6845d6 bash benchmarks/suite_ab.sh                # pass 2, 2 rounds
#   BASE=HEAD~1 PASS=1 ROUNDS=3 bash benchmarks/suite_ab.sh
#
# BASE (a commit) is checked out in a temporary git worktree; this checkout
# is the other side. PASS=1 is make test's first pass (the tests not marked
# multidevice, 1 fake CPU device), PASS=2 its second (multidevice, 8
# devices), each with make test's own command and this checkout's .venv.
# Both sides share one compilation cache folder (under $OUT): one run of
# each warms it (compile apart), then ROUNDS rounds alternate which side
# goes first. Prints each wall time (pytest's whole process, its start and
# end included) and the medians per side. Needs a quiet machine.
set -euo pipefail
source "$(dirname "$0")/ab_lib.sh"
PASS=${PASS:-2}
ab_setup suite_ab
case $PASS in
  1) DEVICES=1; MARKS="not slow and not gpu and not multidevice"; DIST=() ;;
  2) DEVICES=8; MARKS="multidevice and not slow and not gpu"; DIST=(--dist load) ;;
  *) echo "PASS must be 1 or 2, not $PASS" >&2; exit 2 ;;
esac

run() {  # label tree
  local start end
  start=$(date +%s.%N)
  (cd "$2" && FLIP_JAX_TEST_COMPILE_CACHE=$OUT/jit FLIP_JAX_TEST_DEVICES=$DEVICES \
      "$PY" -m pytest -q -m "$MARKS" "${DIST[@]}" > "$OUT/$1.log" 2>&1) || {
    echo "$1 failed: $OUT/$1.log" >&2; exit 1; }
  end=$(date +%s.%N)
  echo "$1 $(echo "$end - $start" | bc)" | tee -a "$OUT/walls.txt"
}

ab_rounds
ab_medians
