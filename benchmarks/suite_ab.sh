#!/bin/bash
# One pass of make test before and after a change, A/B, with a warm cache.
#
#   BASE=c6845d6 bash benchmarks/suite_ab.sh                # pass 2, 2 rounds
#   BASE=HEAD~1 PASS=1 ROUNDS=3 bash benchmarks/suite_ab.sh
#
# BASE (a commit) is checked out in a temporary git worktree; this checkout
# is the other side. PASS=1 is make test's first pass (the tests not marked
# multidevice, 1 fake CPU device), PASS=2 its second (multidevice, 8
# devices): this checkout's Makefile target test-pass$PASS, run in each
# tree with this checkout's .venv, so both sides run the same command.
# Both sides share one compilation cache folder (under $OUT): one run of
# each warms it (compile apart), then ROUNDS rounds alternate which side
# goes first. Prints each wall time (pytest's whole process, its start and
# end included) and the medians per side. Needs a quiet machine.
set -euo pipefail
source "$(dirname "$0")/ab_lib.sh"
PASS=${PASS:-2}
[[ $PASS == 1 || $PASS == 2 ]] || { echo "PASS must be 1 or 2, not $PASS" >&2; exit 2; }
ab_setup suite_ab

one_pass() {  # tree log
  make -s -f "$REPO/Makefile" -C "$1" "test-pass$PASS" PY="$PY" \
      TEST_JIT_CACHE="$OUT/jit" > "$2" 2>&1 || {
    echo "failed: $2" >&2; exit 1; }
}

run() {  # label tree
  ab_timed "$1" one_pass "$2" "$OUT/$1.log"
}

ab_rounds
ab_medians
