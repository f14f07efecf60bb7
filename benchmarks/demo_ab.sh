#!/bin/bash
# The main job (make demo's command) before and after a change, A/B.
#
#   BASE=3c54959 bash benchmarks/demo_ab.sh            # 2 rounds
#   BASE=HEAD~2 ROUNDS=3 OUT=runs/demo_ab bash benchmarks/demo_ab.sh
#   BASE=HEAD~1 RUN_ARGS="--preset=tiny" bash benchmarks/demo_ab.sh
#
# BASE (a commit) is checked out in a temporary git worktree; this checkout
# is the other side. Both run `python -m experiments.run_all
# --dataset=synthetic $RUN_ARGS` with this checkout's .venv (python -m puts
# each tree's own packages first), in fresh workdirs, sharing one
# compilation cache (XDG_CACHE_HOME under $OUT): one run of each warms it
# (compile apart), then ROUNDS rounds alternate which side goes first.
# Prints each wall time, the medians, every run's stage walls, and whether
# the two sides' result tables (every column but the wall times) agree.
# Needs a quiet machine: nothing else running (machines are noisy, +-25 %).
set -euo pipefail
source "$(dirname "$0")/ab_lib.sh"
ab_setup demo_ab
mkdir -p "$OUT/xdg"

demo() {  # tree workdir log
  (cd "$1" && XDG_CACHE_HOME=$OUT/xdg "$PY" -m experiments.run_all \
      --dataset=synthetic --workdir="$2" ${RUN_ARGS:-} > "$3" 2>&1)
}

run() {  # label tree
  local work=$OUT/work_$1
  rm -rf "$work"
  ab_timed "$1" demo "$2" "$work" "$OUT/$1.log"
  # The result table without its wall column.
  grep '^| ' "$work/report.md" | grep -v '^| stage' \
      | awk -F'|' '{NF -= 2; print}' OFS='|' > "$OUT/$1.table"
}

ab_rounds
ab_medians

"$PY" - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
walls = dict(line.split() for line in open(f"{out}/walls.txt"))
for label in walls:  # each stage's wall, as the run's stages.json has it
  stages = json.load(open(f"{out}/work_{label}/stages.json"))
  print(label, " ".join(f"{name}={s['wall_sec']:.1f}"
                        for name, s in stages.items()))
tables = {open(f"{out}/{label}.table").read() for label in walls}
print("result tables (wall times apart):",
      "equal" if len(tables) == 1 else "DIFFERENT (see *.table)")
EOF
