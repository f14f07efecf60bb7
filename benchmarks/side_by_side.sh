#!/usr/bin/env bash
# The official FLIP step and ours, interleaved in one run (official, ours,
# official, ours, ...), so that a speed-up is a ratio of neighbours, not of
# figures from different days. Needs the official code and its venv set up
# as ../shared/bench/official_flip/README.md says (outside the project).
#
#   OFFICIAL_PY=<official venv>/bin/python FLIP_OFFICIAL_DIR=<official code> \
#   BENCH_SCRATCH=<scratch dir> STEP=pretrain PAIRS=3 \
#   bash benchmarks/side_by_side.sh > log
#
# STEP=pretrain: official_pretrain.py against `benchmarks.pretrain_step`
#   (FORMS, default fast/mb16,official/mb16: the fast form and the official
#   arithmetic, 16 micro-batches; LENGTHS, default "100");
# STEP=finetune: official_finetune.py (run --prepare once first) against
#   `benchmarks.finetune_step` (FORMS, default joint/mb8; LENGTHS, default
#   "75 100": ML-1M's longest prompt and the official padded length).
# The official code pads every prompt to 100 tokens; LENGTHS=75 times ours
# at the longest ML-1M prompt (what `data.pad_to=longest` trains on).
# E2E_FORMS (optional, e.g. pretrain/mb16 or finetune_joint/mb8): each pair
#   also runs `benchmarks.e2e_throughput` on real ML-1M (E2E_DATA, default
#   ../shared/data/ml-1m; E2E_STEPS, default 10): pipeline, step and logging.
# Every command runs under quiet_run.py, which logs the CPU that other
# processes used meanwhile (a noisy pair is visible in the log).
set -euo pipefail
STEP=${STEP:-pretrain}
PAIRS=${PAIRS:-3}
OFFICIAL_STEPS=${OFFICIAL_STEPS:-3}
BENCH=${BENCH:-../shared/bench/official_flip}
PY=${PY:-.venv/bin/python}
: "${OFFICIAL_PY:?set OFFICIAL_PY to the python of the official code venv}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

quiet() {  # quiet <command...>: runs it, prints its output and the CPU log
  python3 "$BENCH/quiet_run.py" "$tmp/q.log" "$@" >/dev/null
  # The official venv, code and scratch folders are paths outside the
  # project (they appear in commands and the official code's warnings):
  # logged as placeholders.
  grep -v '^# loadavg' "$tmp/q.log" | sed \
    -e "s|$OFFICIAL_PY|<official venv>/bin/python|g" \
    ${FLIP_OFFICIAL_DIR:+-e "s|$FLIP_OFFICIAL_DIR|<official code>|g"} \
    ${BENCH_SCRATCH:+-e "s|$BENCH_SCRATCH|<scratch>|g"}
}

case "$STEP" in
  pretrain)
    FORMS=${FORMS:-fast/mb16,official/mb16}
    official=("$OFFICIAL_PY" "$BENCH/official_pretrain.py" --warmup 1
              --steps "$OFFICIAL_STEPS")
    LENGTHS=${LENGTHS:-100} ;;
  finetune)
    FORMS=${FORMS:-joint/mb8}
    LENGTHS=${LENGTHS:-75 100}
    official=("$OFFICIAL_PY" "$BENCH/official_finetune.py" --warmup 1
              --steps "$OFFICIAL_STEPS") ;;
  *) echo "STEP must be pretrain or finetune, not $STEP" >&2; exit 2 ;;
esac

for ((i = 0; i < PAIRS; i++)); do
  echo "## pair $i: official"
  quiet "${official[@]}"
  echo "## pair $i: flip_jax"
  for length in $LENGTHS; do
    if [[ $STEP == pretrain ]]; then
      quiet "$PY" -m benchmarks.pretrain_step --forms="$FORMS" --runs=1 \
        --steps=3 --batch=128 --length="$length"
    else
      quiet "$PY" -m benchmarks.finetune_step --modes="$FORMS" --runs=1 \
        --steps=3 --batch=128 --length="$length"
    fi
  done
  if [[ -n ${E2E_FORMS:-} ]]; then
    echo "## pair $i: flip_jax end to end on real data"
    quiet "$PY" -m benchmarks.e2e_throughput --forms="$E2E_FORMS" --runs=1 \
      --steps="${E2E_STEPS:-10}" --data_dir="${E2E_DATA:-../shared/data/ml-1m}"
  fi
done
