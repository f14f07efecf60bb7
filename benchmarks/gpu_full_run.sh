#!/usr/bin/env bash
# One lent-GPU session's worth of issue 16, in one command (bash
# benchmarks/gpu_full_run.sh): the full-size FLIP run on MovieLens-1M
# (users 1-2999), then the pretraining step's utilisation (MiniLM-L6 and a
# random RoBERTa-base), each as far as the time allows.
#
# Carried (git-ignored): .whl/ (grain, array-record, portpicker,
# ml_collections, flax, optax, orbax-checkpoint), .devcarry/minilm (MiniLM-L6
# as float16), .devcarry/data/ml-1m (the raw files), .devcarry/roberta-base
# (config.json only). The run's stages share the GPU: the ID model and
# PLM-only baselines train beside the pretraining, the three finetunings of
# the pretrained model beside each other (XLA's allocator grows on demand).
# BUDGET_S bounds the whole script; what is done is copied to $OUT as it
# finishes.
set -u
cd "$(dirname "$0")/.."
T0=$(date +%s); BUDGET_S=${BUDGET_S:-560}
OUT=${OUT:-runs/gpu_out}; mkdir -p "$OUT"
W=${W:-runs/gpu_ml1m}; mkdir -p "$W"
log() { tee -a "$OUT/gpu.log"; }
source benchmarks/gpu_env.sh
# Several stage processes share the GPU: each allocates what it needs.
export XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2

# --- 1. FLIP, full preset, one seed -----------------------------------------
RUN="$PY -m experiments.run_all --dataset=ml-1m --data_dir=${DATA_DIR:-.devcarry/data/ml-1m}
  --workdir=$W --preset=${PRESET:-full} --plm=${PLM:-.devcarry/minilm}
  --set=model.dtype=bfloat16
  --set=pretrain:train.num_epochs=${PRE_EPOCHS:-2}"
PLM_EPOCHS="--set=finetune:train.num_epochs=${FT_EPOCHS:-1} --set=finetune:train.eval_every_steps=${FT_EVAL:-1000}"
stage() {  # stage <name> [extra flags]: one stage in its own process
  local name=$1; shift
  echo "[$(( $(date +%s) - T0 ))s] start $name" | log
  timeout $(limit 60) $RUN --stages="$name" "$@" > "$W/$name.log" 2>&1
  local rc=$?
  echo "[$(( $(date +%s) - T0 ))s] end $name rc=$rc" | log
  tail -3 "$W/$name.log" | cut -c1-300 | log
}
stage prepare
stage pretrain & P=$!
stage base_id & stage base_plm $PLM_EPOCHS & wait $P
stage flip_id & stage flip_plm $PLM_EPOCHS & stage flip_joint $PLM_EPOCHS &
wait
$PY -c "from experiments import report; print(report.write_report('$W', dataset='ml-1m', preset='${PRESET:-full}'))" 2>&1 | log
tar -czf "$OUT/gpu_ml1m.tgz" --exclude=checkpoints --exclude=best \
  --exclude=.flip_jax_cache --exclude='*.npy' "$W" 2>/dev/null

# --- 2. Utilisation of the fast pretraining step ----------------------------
bench() {  # bench <seconds needed> <args...>
  local need=$1; shift
  if [ "$(left)" -lt "$need" ]; then echo "skip (time): $*" | log; return; fi
  echo "=== pretrain_step $*" | log
  timeout $(limit 5) $PY -m benchmarks.pretrain_step --runs=1 \
    --steps=20 --dtype=bfloat16 "$@" 2>&1 | grep -v "^W1\|^I1" | log
}
bench 70 --forms=fast --batch=1024 --plm=.devcarry/minilm
bench 90 --forms=fast --batch=512 --plm=random:.devcarry/roberta-base
echo "[$(( $(date +%s) - T0 ))s] done" | log
