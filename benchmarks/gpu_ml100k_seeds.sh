#!/usr/bin/env bash
# One lent-GPU call for issue 17: FLIP's full preset (DCNv2 + all six layers
# of MiniLM-L6, the official learning rates and batches) on all of
# MovieLens-100K, three seeds, every claim-bearing model:
#   BUDGET_S=520 bash benchmarks/gpu_ml100k_seeds.sh
#   PLAN=ablations BUDGET_S=400 bash benchmarks/gpu_ml100k_seeds.sh  # 2nd call
#
# The seeds run side by side, each in its own chain of processes sharing the
# GPU: pretraining beside the ID model and the PLM-only model from scratch,
# then FLIP_ID, FLIP_PLM and the joint model beside each other. The epochs
# are cut to what one call affords (PRE_EPOCHS, FT_EPOCHS; the ID models keep
# the official 20 epochs with patience 3): the report's `stopped` column says
# which model was still rising at its end. Pretraining takes micro-batches of
# PRE_MB rows (the same loss and gradient; three pretrainings at once fit in
# an H100's memory). Carried (git-ignored): .whl/, .devcarry/minilm (MiniLM-L6
# as float16), .devcarry/data/ml-100k (the raw files). What is done is in
# $OUT/gpu_ml100k.tgz (logs, metrics, results; no checkpoints).
set -u
cd "$(dirname "$0")/.."
T0=$(date +%s); BUDGET_S=${BUDGET_S:-520}
OUT=${OUT:-runs/gpu_out}; mkdir -p "$OUT"
W=${W:-runs/gpu_ml100k}; mkdir -p "$W"
SEEDS=${SEEDS:-"2012 2013 2014"}
log() { tee -a "$OUT/gpu.log"; }
source benchmarks/gpu_env.sh
export XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used \
    --format=csv,noheader -l 5 > "$OUT/smi.csv" 2>&1 & SMI=$!
fi

ARGS="--dataset=ml-100k --data_dir=${DATA_DIR:-.devcarry/data/ml-100k}
  --preset=${PRESET:-full} --plm=${PLM:-.devcarry/minilm}
  --set=model.dtype=bfloat16 --set=data.cache_dir=$PWD/$W/.flip_jax_cache
  --set=pretrain:train.num_epochs=${PRE_EPOCHS:-3}
  --set=pretrain:train.micro_batch_size=${PRE_MB:-512}"
PLM_BUDGET="--set=finetune:train.num_epochs=${FT_EPOCHS:-3}
  --set=finetune:train.eval_every_steps=${FT_EVAL:--2}"
stage() {  # stage <seed> <name> [extra flags]: one stage in its own process
  local seed=$1 name=$2; shift 2
  echo "[$(( $(date +%s) - T0 ))s] start $seed $name" | log
  timeout $(limit 25) $PY -m experiments.run_all $ARGS \
    --workdir="$W/seed$seed" --seed="$seed" --stages="$name" "$@" \
    > "$W/seed$seed.$name.log" 2>&1
  echo "[$(( $(date +%s) - T0 ))s] end $seed $name rc=$?" | log
}
chain() {  # every stage of one seed
  local s=$1 P
  stage "$s" pretrain & P=$!
  stage "$s" base_id & stage "$s" base_plm $PLM_BUDGET & wait $P
  stage "$s" flip_id & stage "$s" flip_plm $PLM_BUDGET &
  stage "$s" flip_joint $PLM_BUDGET & wait
}
ablations() {  # PLAN=ablations: the joint model from the public weights on
  # every seed; the first seed's pretraining without each loss (each then
  # finetunes the joint model). Same budgets as the main plan.
  local s first=${SEEDS%% *}
  for s in $SEEDS; do stage "$s" base_joint $PLM_BUDGET & done
  for s in no_mlm no_mtm no_icl; do
    stage "$first" "ablate_$s" $PLM_BUDGET &
  done
  wait
}

# The data once (split and tokens do not depend on the run's seed).
$PY -m experiments.run_all $ARGS --workdir="$W" --seeds="${SEEDS// /,}" \
  --stages=prepare > "$W/prepare.log" 2>&1
echo "[$(( $(date +%s) - T0 ))s] prepared rc=$?" | log
for s in $SEEDS; do mkdir -p "$W/seed$s"; done
if [ "${PLAN:-main}" = ablations ]; then ablations &
else for s in $SEEDS; do chain "$s" & done; fi
wait $(jobs -p | grep -v "^${SMI:-x}$")
$PY -c "from experiments import report; print(report.write_report('$W', dataset='ml-100k', preset='${PRESET:-full}'))" 2>&1 | log
[ -n "${SMI:-}" ] && kill "$SMI"
tar -czf "$OUT/gpu_ml100k.tgz" --exclude=checkpoints --exclude=best \
  --exclude=.flip_jax_cache --exclude='*.npy' "$W" 2>/dev/null
echo "[$(( $(date +%s) - T0 ))s] done" | log
