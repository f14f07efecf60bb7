r"""End-to-end training throughput on real data: pipeline + step + logging.

Runs the shared loop (`experiments.launch.run`) on a dataset for a few steps
per configuration, in a fresh workdir each time, and reports the median of
the logged `examples_per_sec` intervals (the first step, which compiles, is
excluded by the loop), interleaving the configurations run after run.

  python -m benchmarks.e2e_throughput --data_dir=../shared/data/ml-1m \
    --forms=finetune_joint/mb4,pretrain/mb16 --runs=3 --steps=12

Forms: `finetune_joint` (FLIP joint finetuning, batch 128, MiniLM-L6 full
depth, text length 100 padded to the data's longest prompt) and `pretrain`
(FLIP pretraining, batch 128, same PLM); `/mbM` = micro-batches of
128 / M rows; `@max_length` pads every batch to data.max_length (the
official form) instead of the longest prompt.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time


def _config(form: str, dataset: str, data_dir: str, cache_dir: str,
            steps: int):
  # pylint: disable=g-import-not-at-top
  from experiments.configs import flip_finetune
  from experiments.configs import flip_pretrain
  # pylint: enable=g-import-not-at-top
  pad = "max_length" if form.endswith("@max_length") else "longest"
  form = form.split("@")[0]
  name, _, mb = form.partition("/mb")
  arg = f"dataset={dataset},preset=full"
  if name == "pretrain":
    cfg = flip_pretrain.get_config(arg)
  elif name == "finetune_joint":
    cfg = flip_finetune.get_config(arg + ",mode=joint")
  else:
    raise ValueError(f"form {form!r}: pretrain or finetune_joint")
  cfg.data.data_dir = data_dir
  cfg.data.cache_dir = cache_dir
  cfg.data.pad_to = pad
  cfg.train.batch_size = 128
  cfg.train.micro_batch_size = 128 // int(mb) if mb else 0
  cfg.train.max_steps = steps
  cfg.train.eval_every_steps = 10 ** 9  # no evaluation inside the timing
  cfg.log_every_steps = 2
  cfg.ckpt.every_steps = 10 ** 9
  cfg.ckpt.async_save = False
  return cfg


def _small_eval(task, rows: int = 256):
  """The task with its evaluation splits cut to ``rows`` (the final
  evaluation is not what is timed)."""
  load = task.load_data

  def load_data(workdir):
    data = load(workdir)
    data.eval_splits = {k: {c: v[:rows] for c, v in cols.items()}
                        for k, cols in data.eval_splits.items()}
    return data
  task.load_data = load_data
  return task


def run(form: str, args) -> dict:
  # pylint: disable=g-import-not-at-top
  from flip_jax import methods
  from flip_jax.train import logging as log_lib
  from flip_jax.train import loop
  # pylint: enable=g-import-not-at-top
  workdir = tempfile.mkdtemp(prefix="e2e_", dir=args.scratch)
  cfg = _config(form, args.dataset, args.data_dir, args.cache_dir, args.steps)
  t0 = time.perf_counter()
  loop.train_and_evaluate(cfg, workdir, _small_eval(methods.make_task(cfg)))
  rows = log_lib.read_metrics(workdir)
  rates = [r["examples_per_sec"] for r in rows
           if "examples_per_sec" in r and r["step"] > 1]
  compile_s = next((r["compile_sec"] for r in rows
                    if r.get("compile_sec")), None)
  shutil.rmtree(workdir, ignore_errors=True)
  return {"form": form, "examples_per_s": statistics.median(rates),
          "compile_s": compile_s, "wall_s": time.perf_counter() - t0}


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--forms", default="finetune_joint/mb4")
  ap.add_argument("--dataset", default="ml-1m")
  ap.add_argument("--data_dir", default="../shared/data/ml-1m")
  ap.add_argument("--cache_dir", default="runs/bench_cache")
  ap.add_argument("--scratch", default="runs")
  ap.add_argument("--runs", type=int, default=3)
  ap.add_argument("--steps", type=int, default=12)
  args = ap.parse_args()
  os.makedirs(args.scratch, exist_ok=True)
  forms = args.forms.split(",")
  res = {f: [] for f in forms}
  for i in range(args.runs):
    for f in forms:
      r = run(f, args)
      res[f].append(r)
      print(f"run {i} {f}: {r['examples_per_s']:.2f} ex/s (compile "
            f"{r['compile_s']}s)", flush=True)
  for f in forms:
    med = statistics.median(r["examples_per_s"] for r in res[f])
    print(f"{f:<28} {med:8.2f} ex/s (median of {args.runs})")
    print("BENCH " + json.dumps({"bench": f"e2e/{f}", "examples_per_s": med,
                                 "runs": [r["examples_per_s"]
                                          for r in res[f]]}))


if __name__ == "__main__":
  main()
