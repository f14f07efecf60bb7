#!/usr/bin/env bash
# One lent-GPU call for issue 26 (bash benchmarks/gpu_step_ab.sh): the A/B
# matrix of the FLIP fast pretraining step (benchmarks/gpu_step_ab.py) for
# MiniLM-L6 at batch 1,024 and a random RoBERTa-base at batch 512, within
# BUDGET_S seconds (default 400: the whole call stays under 8 minutes with
# the install and the FLOP counts). Carried (git-ignored): .whl/,
# .devcarry/minilm (MiniLM-L6 as float16), .devcarry/roberta-base
# (config.json only). Extra arguments go to the script (e.g.
# --configs=bf16,bf16+cudnn --parallel=1). Writes $OUT/gpu_step_ab.json and
# $OUT/gpu_step_ab.log (+ gpu.log: the device and packages).
set -u
cd "$(dirname "$0")/.."
T0=$(date +%s); BUDGET_S=${BUDGET_S:-400}
OUT=${OUT:-runs/gpu_ab}; mkdir -p "$OUT"
log() { tee -a "$OUT/gpu.log"; }
source benchmarks/gpu_env.sh
export XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2
timeout $(( BUDGET_S + 60 )) $PY -m benchmarks.gpu_step_ab \
  --plms="${MINILM:-.devcarry/minilm}@${MINILM_BATCH:-1024},random:${ROBERTA:-.devcarry/roberta-base}@${ROBERTA_BATCH:-512}" \
  --budget_s=$(( BUDGET_S - ($(date +%s) - T0) )) --out="$OUT" "$@" 2>&1 \
  | grep -v "^W1\|^I1" | log
echo "[$(( $(date +%s) - T0 ))s] done" | log
