#!/usr/bin/env bash
# Issue 25, item 7: FLIP at 100 % of the official budget on a lent GPU, one
# seed per session (seeds accumulate across sessions in benchmarks/logs/):
#   SEED=2012 BUDGET_S=540 bash benchmarks/gpu_full_budget.sh   # 1st call
#   SEED=2012 BUDGET_S=300 bash benchmarks/gpu_full_budget.sh   # 2nd call
#
# All of ML-100K, the full preset untouched (DCNv2 + every layer of
# MiniLM-L6, official rates and batches, bf16 compute): pretraining 30
# epochs (cosine once per epoch over the official 30), then the ID model,
# PLM-only, FLIP_ID, FLIP_PLM, the joint model and its alpha = sigmoid(θ)
# variant with the official finetuning budgets (<= 20 / 25 epochs, one
# evaluation per epoch, patience 3 epochs), then the fusion bounds and the
# report. Stages run side by side on the one GPU (pretraining beside the two
# baselines; the four finetunings of the pretrained model beside each other),
# each in its own process; all share JAX's persistent compilation cache
# ($W/.jax_cache), so a program is compiled once per session.
#
# A call runs as far as BUDGET_S allows: `timeout` sends SIGTERM, the loop
# saves a checkpoint at the next step and stops, and the SAME command on the
# still-warm machine (files outside $OUT survive only while it is warm:
# the script checks $W first and says what it found) resumes every stage
# where it stopped and skips the finished ones. What is done is copied to
# $OUT after every call: seed<N>_full_budget.json (the report's
# summary.json, stages.json with each stage's wall time, the budget shares)
# and a tgz of the logs and run files (no checkpoints).
# Carried (git-ignored): .whl/, .devcarry/minilm (float16 copy),
# .devcarry/data/ml-100k (see benchmarks/README.md). Dry run on a CPU:
#   SKIP_INSTALL=1 PY=.venv/bin/python PRESET=tiny DATA_DIR=../shared/data/ml-100k \
#     PLM=minilm-l6 DTYPE=float32 BUDGET_S=900 bash benchmarks/gpu_full_budget.sh
set -u
cd "$(dirname "$0")/.."
T0=$(date +%s); BUDGET_S=${BUDGET_S:-540}
OUT=${OUT:-runs/gpu_out}; mkdir -p "$OUT"
SEED=${SEED:-2012}
W=${W:-runs/gpu_budget}
log() { tee -a "$OUT/gpu.log"; }
if [ -d "$W/seed$SEED" ]; then
  echo "[warm] $W/seed$SEED found: resuming ($(ls "$W/seed$SEED" | tr '\n' ' '))" | log
else
  echo "[cold] no $W/seed$SEED: starting from the data" | log
fi
mkdir -p "$W/seed$SEED"
source benchmarks/gpu_env.sh
export XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2
export FLIP_JAX_COMPILE_CACHE=$PWD/$W/.jax_cache
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used \
    --format=csv,noheader -l 5 >> "$OUT/smi.csv" 2>&1 & SMI=$!
fi

PRESET=${PRESET:-full}
ARGS="--dataset=ml-100k --data_dir=${DATA_DIR:-.devcarry/data/ml-100k}
  --preset=$PRESET --plm=${PLM:-.devcarry/minilm}
  --set=model.dtype=${DTYPE:-bfloat16}
  --set=data.cache_dir=$PWD/$W/.flip_jax_cache"
stage() {  # stage <name>: one stage of the seed in its own process
  local name=$1 rc
  echo "[$(( $(date +%s) - T0 ))s] start $name" | log
  timeout $(limit 40) $PY -m experiments.run_all $ARGS \
    --workdir="$W/seed$SEED" --seed="$SEED" --stages="$name" \
    > "$W/seed$SEED.$name.log" 2>&1
  rc=$?
  echo "[$(( $(date +%s) - T0 ))s] end $name rc=$rc" \
    "$([ $rc = 143 ] || [ $rc = 124 ] && echo '(cut by the budget; rerun resumes)')" | log
}

stage prepare
stage pretrain & P=$!
stage base_id & stage base_plm & wait $P
if [ -f "$W/seed$SEED/pretrain/pretrain_done.json" ]; then
  stage flip_id & stage flip_plm & stage flip_joint &
  stage flip_joint_sigmoid & wait
fi
wait $(jobs -p | grep -v "^${SMI:-x}$") 2>/dev/null
stage fusion
$PY - "$W/seed$SEED" "$OUT/seed${SEED}_full_budget.json" "$PRESET" <<'EOF' 2>&1 | log
import json, sys
from experiments import flip_workflow
from flip_jax import jsonio
run, out, preset = sys.argv[1:]
print(flip_workflow.write_report(run, dataset="ml-100k", preset=preset))
summary = json.load(open(f"{run}/summary.json"))
summary["stages"] = json.load(open(f"{run}/stages.json"))
jsonio.write_json_atomic(out, summary)
EOF
[ -n "${SMI:-}" ] && kill "$SMI"
tar -czf "$OUT/seed${SEED}_full_budget.tgz" --exclude=checkpoints \
  --exclude=best --exclude=.flip_jax_cache --exclude=.jax_cache \
  --exclude='*.npy' --exclude='*.npz' "$W/seed$SEED" "$W"/seed$SEED.*.log \
  2>/dev/null
echo "[$(( $(date +%s) - T0 ))s] done; $(left) s of the budget left" | log
