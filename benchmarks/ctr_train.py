"""From-scratch CTR baselines on real data: quality and training throughput.

Trains each backbone with the `ctr` task on the shared loop (the same code
path as `experiments.train_ctr`) for several seeds and prints valid / test
AUC and LogLoss as mean +- std, plus training examples/s (the median of
the run's logged intervals, compile excluded) and the device.

  python -m benchmarks.ctr_train --data_dir=../shared/data/ml-1m \
    --out_dir=runs/bench_ctr --models=dcnv2,deepfm,autoint \
    --seeds=2012,2013,2014 --recipe=flip_id

  # training throughput only (no evaluation), e.g. batch 1024 DCNv2:
  python -m benchmarks.ctr_train --models=dcnv2 --throughput_steps=100

Finished runs (results.json in their workdir) are reused, so an interrupted
benchmark resumes.  Calibration on ML-1M users 1-2999 (flip_jax 80/10/10):
one-hot LR valid 0.735 / test 0.769; PyTorch DCNv2 with the official
settings valid 0.742 / test 0.771 (test logloss 0.571).
"""
from __future__ import annotations

import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from experiments import launch
from experiments.configs import ctr as ctr_configs

_DATA_DIR = flags.DEFINE_string("data_dir", "../shared/data/ml-1m",
                                "Raw dataset directory.")
_DATASET = flags.DEFINE_string("dataset", "ml-1m", "Dataset key.")
_OUT_DIR = flags.DEFINE_string("out_dir", "runs/bench_ctr", "Run directories.")
_CACHE_DIR = flags.DEFINE_string("cache_dir", "", "Data cache ('' = out_dir).")
_MODELS = flags.DEFINE_list("models", ["dcnv2", "deepfm", "autoint"],
                            "Backbones.")
_SEEDS = flags.DEFINE_list("seeds", ["2012", "2013", "2014"], "Seeds.")
_RECIPE = flags.DEFINE_enum("recipe", "flip_id", ctr_configs.RECIPES,
                            "Training recipe.")
_EPOCHS = flags.DEFINE_integer("epochs", 0, "Epoch cap (0 = the recipe's).")
_THROUGHPUT = flags.DEFINE_integer(
    "throughput_steps", 0, "If > 0: only time this many training steps per "
    "model (after a compile chunk), 5 repeats, and print examples/s.")

COLUMNS = ("valid/auc", "valid/logloss", "test/auc", "test/logloss",
           "examples_per_sec", "best_step")


def _config(model: str, seed: int = 2012):
  cfg = ctr_configs.get_config(
      f"dataset={_DATASET.value},model={model},recipe={_RECIPE.value}")
  cfg.seed = seed
  cfg.data.data_dir = _DATA_DIR.value
  cfg.data.cache_dir = _CACHE_DIR.value or os.path.join(_OUT_DIR.value,
                                                        "data_cache")
  if _EPOCHS.value:
    cfg.train.num_epochs = _EPOCHS.value
  return cfg


def run_one(model: str, seed: int) -> dict:
  workdir = os.path.join(_OUT_DIR.value,
                         f"{_DATASET.value}_{model}_{_RECIPE.value}_s{seed}")
  return launch.run(_config(model, seed), workdir)


def throughput(model: str) -> tuple[float, float]:
  """Steady-state examples/s of the shared jitted train step (ctr task).

  The batches come from the shared input pipeline and are placed on the
  devices before timing, so this is the step alone (the loop's figure,
  ``examples_per_sec`` in results.json, includes the pipeline).

  Returns:
    (median, max) over 5 timed runs of `--throughput_steps` steps.
  """
  # pylint: disable=g-import-not-at-top
  import functools
  from flax import linen as nn
  from flip_jax import optim
  from flip_jax import sharding
  from flip_jax.data import pipeline
  from flip_jax.methods import ctr as ctr_task
  from flip_jax.train import init as init_lib
  from flip_jax.train import runtime
  from flip_jax.train import state as state_lib
  from flip_jax.train import steps
  # pylint: enable=g-import-not-at-top
  cfg = _config(model)
  task = ctr_task.CtrTask(cfg)
  data = task.load_data(_OUT_DIR.value)
  task.build_model(data)
  mesh, rules = runtime.mesh_and_rules(cfg)
  tx = optim.build_optimizer(cfg.optim, steps_per_epoch=100, total_steps=100)
  example = task.example_batch(data, jax.device_count())
  init = init_lib.sharded_state_init(
      lambda r: task.init_variables(r, example, {}),
      lambda p, ms, r: state_lib.create_train_state(p, tx, r, ms),
      tx, mesh, rules)
  keys = data.train_keys
  bsz, k = cfg.train.batch_size, _THROUGHPUT.value
  it = pipeline.train_iterator(data.train, global_batch_size=bsz, seed=0)
  batch_sh = {key: sharding.batch_sharding(mesh, rules, 2 if key == "ids"
                                           else 1) for key in keys}
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state = init.init(state_lib.new_key(0))
    batches = [sharding.global_batch({key: b[key] for key in keys}, mesh,
                                     rules, batch_sh)
               for b in (next(it) for _ in range(k))]
    step = jax.jit(functools.partial(steps.train_step, task=task),
                   donate_argnums=0)
    state, m = step(state, batches[0], {})
    jax.block_until_ready(m)
    rates = []
    for _ in range(5):
      t0 = time.perf_counter()
      for b in batches:
        state, m = step(state, b, {})
      jax.block_until_ready(m)
      rates.append(k * bsz / (time.perf_counter() - t0))
  it.close()
  return float(np.median(rates)), float(np.max(rates))


def fmt(values, digits=4) -> str:
  v = np.asarray([x for x in values if x is not None], np.float64)
  if v.size == 0:
    return "n/a"
  if v.size == 1:
    return f"{v[0]:.{digits}f}"
  return f"{v.mean():.{digits}f} +- {v.std(ddof=1):.{digits}f}"


def main(argv):
  del argv
  if _THROUGHPUT.value > 0:
    dev = jax.devices()[0]
    print(f"device: {dev.platform} {dev.device_kind} x{jax.device_count()}, "
          f"{os.cpu_count()} cpus; load average {os.getloadavg()}")
    for model in _MODELS.value:
      med, best = throughput(model)
      print(f"{model:10s} recipe {_RECIPE.value}: {med:,.0f} examples/s "
            f"(median of 5 x {_THROUGHPUT.value} steps; max {best:,.0f})")
    return
  rows = {}
  for model in _MODELS.value:
    rows[model] = [run_one(model, int(s)) for s in _SEEDS.value]
  dev = jax.devices()[0]
  print(f"\ncommand: python -m benchmarks.ctr_train {' '.join(sys.argv[1:])}")
  print(f"device: {dev.platform} {dev.device_kind} x{jax.device_count()}, "
        f"{os.cpu_count()} cpus; load average {os.getloadavg()}")
  print(f"dataset {_DATASET.value}, recipe {_RECIPE.value}, seeds "
        f"{','.join(_SEEDS.value)} (mean +- sample std over seeds)")
  header = f"{'model':10s} | " + " | ".join(f"{c:>22s}" for c in COLUMNS)
  print(header)
  print("-" * len(header))
  for model, res in rows.items():
    cells = [fmt([r[c] for r in res], 0 if c in ("examples_per_sec",
                                                 "best_step") else 4)
             for c in COLUMNS]
    print(f"{model:10s} | " + " | ".join(f"{c:>22s}" for c in cells))
  summary = {m: {c: [r[c] for r in res] for c in COLUMNS}
             for m, res in rows.items()}
  os.makedirs(_OUT_DIR.value, exist_ok=True)
  with open(os.path.join(_OUT_DIR.value, f"summary_{_RECIPE.value}.json"),
            "w") as f:
    json.dump(summary, f, indent=2)
  logging.info("summary: %s", summary)


if __name__ == "__main__":
  app.run(main)
