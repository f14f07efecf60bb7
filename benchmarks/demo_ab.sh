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
REPO=$(cd "$(dirname "$0")/.." && pwd)
BASE=${BASE:?set BASE to the commit to compare with}
ROUNDS=${ROUNDS:-2}
OUT=$(mkdir -p "${OUT:-$REPO/runs/demo_ab}" && cd "${OUT:-$REPO/runs/demo_ab}" && pwd)
PY=$REPO/.venv/bin/python
TREE=$(mktemp -d -t demo_ab_base.XXXXXX)  # under $TMPDIR (else /tmp)
trap 'git -C "$REPO" worktree remove --force "$TREE"' EXIT
git -C "$REPO" worktree add -q --detach "$TREE" "$BASE"
mkdir -p "$OUT/xdg"
: > "$OUT/walls.txt"

run() {  # label tree
  local work=$OUT/work_$1
  rm -rf "$work"
  local start end
  start=$(date +%s.%N)
  (cd "$2" && XDG_CACHE_HOME=$OUT/xdg "$PY" -m experiments.run_all \
      --dataset=synthetic --workdir="$work" ${RUN_ARGS:-} > "$OUT/$1.log" 2>&1)
  end=$(date +%s.%N)
  echo "$1 $(echo "$end - $start" | bc)" | tee -a "$OUT/walls.txt"
  # The result table without its wall column.
  grep '^| ' "$work/report.md" | grep -v '^| stage' \
      | awk -F'|' '{NF -= 2; print}' OFS='|' > "$OUT/$1.table"
}

run warm_base "$TREE"
run warm_this "$REPO"
for r in $(seq 1 "$ROUNDS"); do
  if (( r % 2 )); then order="base this"; else order="this base"; fi
  for side in $order; do
    if [[ $side == base ]]; then run "base$r" "$TREE"; else run "this$r" "$REPO"; fi
  done
done

"$PY" - "$OUT" "$ROUNDS" <<'EOF'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
walls = dict(line.split() for line in open(f"{out}/walls.txt"))
for side in ("base", "this"):
  runs = [float(walls[f"{side}{r}"]) for r in range(1, rounds + 1)]
  print(f"{side}: " + ", ".join(f"{w:.1f}" for w in runs)
        + f" s; median {statistics.median(runs):.1f} s")
for label in walls:  # each stage's wall, as the run's stages.json has it
  stages = json.load(open(f"{out}/work_{label}/stages.json"))
  print(label, " ".join(f"{name}={s['wall_sec']:.1f}"
                        for name, s in stages.items()))
tables = {open(f"{out}/{label}.table").read() for label in walls}
print("result tables (wall times apart):",
      "equal" if len(tables) == 1 else "DIFFERENT (see *.table)")
EOF
