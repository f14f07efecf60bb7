"""The files a run of the loop writes beside its checkpoints.

``schedule.json`` (the run's shape), ``early_stopping.json`` (the
early-stopping record of every checkpoint, so a resumed run keeps its best),
``results.json`` (the best checkpoint's metrics), ``predictions.npz`` (its
valid / test predictions) and the throughput read back from the metrics.
"""
from __future__ import annotations

import json
import math
import os

import jax
import numpy as np

from flip_jax import jsonio
from flip_jax.data import pipeline
from flip_jax.train import logging as log_lib

TRACKER = "early_stopping.json"
RESULTS = "results.json"
# The run's shape (rows, steps per epoch, total steps, evaluation cadence,
# patience in evaluations): what a report needs to state its budget.
SCHEDULE = "schedule.json"
# Valid / test predictions of the best checkpoint (the fusion bound's input).
PREDICTIONS = "predictions.npz"



def schedule(config, num_rows: int) -> dict[str, int]:
  """Steps per epoch, total steps and the evaluation interval."""
  t = config.train
  if t.batch_size % jax.process_count():
    raise ValueError(f"train.batch_size={t.batch_size} is not divisible by "
                     f"the {jax.process_count()} processes")
  per_epoch = pipeline.steps_per_epoch(num_rows, t.batch_size)
  if per_epoch < 1:
    raise ValueError(f"train.batch_size={t.batch_size} exceeds the "
                     f"{num_rows} training rows")
  total = t.num_epochs * per_epoch
  if t.max_steps > 0:
    total = min(total, t.max_steps)
  # eval_every_steps > 0: a step interval; -N: N evaluations per epoch.
  every = (t.eval_every_steps if t.eval_every_steps > 0 else
           max(1, per_epoch // -t.eval_every_steps))
  # patience_unit 'epochs': as the official code counts it, whatever the
  # evaluation cadence (3 epochs at 2 evaluations per epoch = 6).
  patience = (t.patience if t.patience_unit == "evals" else
              max(1, math.ceil(t.patience * per_epoch / every)))
  return {"train_rows": num_rows, "batch_size": t.batch_size,
          "steps_per_epoch": per_epoch, "total_steps": total,
          "eval_every": every, "patience_evals": patience}


def load_tracker(workdir: str, step: int) -> dict | None:
  """The early-stopping record saved with checkpoint ``step`` (or None)."""
  path = os.path.join(workdir, TRACKER)
  if not os.path.exists(path):
    return None
  return jsonio.read_json(path).get(str(step))


def save_tracker(workdir: str, step: int, tracker: dict) -> None:
  """Saves the record of ``step``, dropping those of later steps."""
  path = os.path.join(workdir, TRACKER)
  data = jsonio.read_json(path) if os.path.exists(path) else {}
  data = {k: v for k, v in data.items() if int(k) <= step}
  data[str(step)] = tracker
  jsonio.write_json_atomic(path, data)


def median_throughput(workdir: str) -> float:
  """Median examples/s over the run's logged intervals (metrics.jsonl)."""
  path = os.path.join(workdir, log_lib.METRICS_FILE)
  vals = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        rec = json.loads(line)
        if "examples_per_sec" in rec:
          vals.append(rec["examples_per_sec"])
  return float(np.median(vals)) if vals else 0.0


def write_predictions(path: str, preds: dict[str, dict[str, np.ndarray]]
                      ) -> None:
  """``predictions.npz``: ``<split>/<name>`` arrays (row_id, label, prob and
  every ``<branch>_prob``) of the best checkpoint, written atomically."""
  flat = {f"{split}/{k}": np.asarray(v) for split, pred in preds.items()
          for k, v in pred.items()}
  tmp = path + ".tmp.npz"
  np.savez(tmp, **flat)
  os.replace(tmp, path)
