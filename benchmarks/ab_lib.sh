# Shared by the shell A/Bs (demo_ab.sh, suite_ab.sh); sourced, not run.
#
# ab_setup NAME: REPO, BASE (required), ROUNDS (default 2), OUT (default
# runs/NAME, made absolute), PY (this checkout's .venv), TREE (a temporary
# git worktree of BASE, removed at exit) and an empty $OUT/walls.txt.
# ab_rounds: one unmeasured run of each side (warms the caches), then
# ROUNDS rounds alternating which side goes first; the caller defines
# `run LABEL TREE`, which appends "LABEL SECONDS" to $OUT/walls.txt.
# ab_timed LABEL CMD...: runs CMD, appends "LABEL SECONDS" to walls.txt.
# ab_medians: each side's walls and median.

ab_setup() {
  REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  BASE=${BASE:?set BASE to the commit to compare with}
  ROUNDS=${ROUNDS:-2}
  OUT=$(mkdir -p "${OUT:-$REPO/runs/$1}" && cd "${OUT:-$REPO/runs/$1}" && pwd)
  PY=$REPO/.venv/bin/python
  TREE=$(mktemp -d -t "$1_base.XXXXXX")  # under $TMPDIR (else /tmp)
  trap 'git -C "$REPO" worktree remove --force "$TREE"' EXIT
  git -C "$REPO" worktree add -q --detach "$TREE" "$BASE"
  : > "$OUT/walls.txt"
}

ab_rounds() {
  run warm_base "$TREE"
  run warm_this "$REPO"
  local r side order
  for r in $(seq 1 "$ROUNDS"); do
    if (( r % 2 )); then order="base this"; else order="this base"; fi
    for side in $order; do
      if [[ $side == base ]]; then run "base$r" "$TREE"; else run "this$r" "$REPO"; fi
    done
  done
}

ab_timed() {
  local label=$1 start end
  shift
  start=$(date +%s.%N)
  "$@"
  end=$(date +%s.%N)
  echo "$label $(echo "$end - $start" | bc)" | tee -a "$OUT/walls.txt"
}

ab_medians() {
  "$PY" - "$OUT" "$ROUNDS" <<'PYEOF'
import statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
walls = dict(line.split() for line in open(f"{out}/walls.txt"))
for side in ("base", "this"):
  runs = [float(walls[f"{side}{r}"]) for r in range(1, rounds + 1)]
  print(f"{side}: " + ", ".join(f"{w:.1f}" for w in runs)
        + f" s; median {statistics.median(runs):.1f} s")
PYEOF
}
