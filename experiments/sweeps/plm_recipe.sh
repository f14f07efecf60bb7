#!/usr/bin/env bash
# The PLM-only model's recipe for the cpu-full preset, chosen on valid AUC:
# FLIP_PLM's model (MiniLM-L6, first layers kept, [CLS] -> linear) from the
# public weights on all of ML-100K's training rows, 32,000 training
# examples per recipe (0.4 epoch: the cpu-full preset's budget for a PLM
# model is of that order), evaluated on valid 8 times per epoch (every
# 10,000 examples) and at the end. Test AUC is not looked at.
#
#   bash experiments/sweeps/plm_recipe.sh [runs/plm_recipe] [recipe ...]
#
# Rerunning resumes (each recipe is a workdir). Prints each recipe's best
# valid AUC and the step it came at; experiments/configs/flip_finetune.py's
# CPU_FULL_PLM_* hold the chosen one.
set -euo pipefail
out=${1:-runs/plm_recipe}; shift || true
PY=${PY:-.venv/bin/python}
mkdir -p "$out"
DATA_DIR=${DATA_DIR:-../shared/data/ml-100k}
declare -A RECIPES=(
  # name: overrides of flip_finetune.py's cpu-full PLM-only config, every
  # recipe field explicit (so a change of the preset's defaults does not
  # change a recipe); 32,000 examples each.
  [lr2e-4_const_b32]="--config.optim.lr=2e-4 --config.optim.schedule.name=constant --config.train.batch_size=32 --config.train.max_steps=1000"
  [lr5e-4_const_b32]="--config.optim.lr=5e-4 --config.optim.schedule.name=constant --config.train.batch_size=32 --config.train.max_steps=1000"
  [lr5e-4_linear_b64]="--config.optim.lr=5e-4 --config.optim.schedule.name=linear --config.optim.schedule.warmup_steps=0.05 --config.train.batch_size=64 --config.train.max_steps=500"
  [lr1e-3_linear_b64]="--config.optim.lr=1e-3 --config.optim.schedule.name=linear --config.optim.schedule.warmup_steps=0.05 --config.train.batch_size=64 --config.train.max_steps=500"
  [lr2e-4_const_b32_l4]="--config.optim.lr=2e-4 --config.optim.schedule.name=constant --config.train.batch_size=32 --config.train.max_steps=1000 --config.model.plm.num_layers=4"
)
names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=(lr2e-4_const_b32 lr5e-4_linear_b64 lr5e-4_const_b32)
for name in "${names[@]}"; do
  [[ -n ${RECIPES[$name]+x} ]] || { echo "unknown recipe $name" >&2; exit 2; }
  start=$(date +%s)
  # shellcheck disable=SC2086
  "$PY" -m experiments.finetune --workdir "$out/$name" \
    --config experiments/configs/flip_finetune.py:dataset=ml-100k,preset=cpu-full,mode=plm \
    --config.data.data_dir="$DATA_DIR" --config.data.cache_dir="$out/.cache" \
    --config.train.num_epochs=1 --config.train.patience=100 \
    ${RECIPES[$name]} >> "$out/$name.log" 2>&1
  echo "$name $(( $(date +%s) - start )) s" >> "$out/wall.txt"
done
"$PY" - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
for name in sorted(os.listdir(out)):
  path = os.path.join(out, name, "metrics.jsonl")
  if not os.path.exists(path):
    continue
  rows = [json.loads(l) for l in open(path)]
  evals = [(r["step"], r["valid/auc"]) for r in rows if "valid/auc" in r]
  if evals:
    step, auc = max(evals, key=lambda e: e[1])
    curve = " ".join(f"{a:.4f}" for _, a in evals)
    print(f"{name:<24} best valid AUC {auc:.4f} at step {step}; curve {curve}")
PY
