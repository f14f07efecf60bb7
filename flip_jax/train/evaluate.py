"""Batched, sharded prediction over a whole split, and exact CTR metrics.

Evaluation pads the last batch (weight 0, row_id -1); predictions are
gathered from every process and the padding is dropped before AUC / LogLoss
are computed on the host over the entire split.
"""
from __future__ import annotations

from typing import Callable, Mapping

import jax
import numpy as np
from flax import linen as nn
from jax.experimental import multihost_utils

from flip_jax import metrics as metrics_lib
from flip_jax import sharding
from flip_jax.data import pipeline

# Optional column of every split: the row's user, for user-grouped AUC.
GROUP = "group"


def make_predict_fn(predict: Callable, mesh, rules,
                    variable_shardings) -> Callable:
  """jit(variables, batch) -> the task's named probabilities.

  ``predict`` is ``task.predict``; ``variables`` is ``{'params': ...,
  **model_state}`` (BatchNorm layers use their running statistics);
  ``variable_shardings`` its shardings or None.
  """
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    return jax.jit(predict, in_shardings=(variable_shardings, None))


def predict_split(predict_fn, variables, columns, *, keys, batch_size: int, mesh,
                  rules, transform=None) -> dict[str, np.ndarray]:
  """Scores every row of a split; returns host arrays in row order.

  ``transform``: the data's ``eval_transform`` (or None), applied to each
  host batch before it is put on the devices.
  """
  outs: dict[str, list[np.ndarray]] = {}
  shardings = {}
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    for local in pipeline.eval_batches(columns, global_batch_size=batch_size,
                                       transform=transform):
      for k in keys:
        if k not in shardings:
          shardings[k] = sharding.batch_sharding(mesh, rules, np.ndim(local[k]))
      batch = sharding.global_batch({k: local[k] for k in keys}, mesh, rules,
                                    shardings)
      pred = predict_fn(variables, batch)
      extra = {k: local[k] for k in ("label", "weight", "row_id", GROUP)
               if k in local}
      if jax.process_count() > 1:
        pred = multihost_utils.process_allgather(pred, tiled=True)
        extra = multihost_utils.process_allgather(extra, tiled=True)
      else:
        pred = jax.device_get(pred)
      for k, v in {**pred, **extra}.items():
        outs.setdefault(k, []).append(np.asarray(v))
  cat = {k: np.concatenate(v) for k, v in outs.items()}
  real = cat.pop("weight") > 0
  cat = {k: v[real] for k, v in cat.items()}
  order = np.argsort(cat["row_id"], kind="stable")
  return {k: v[order] for k, v in cat.items()}


def split_metrics(pred: Mapping[str, np.ndarray],
                  prefix: str) -> dict[str, float]:
  """AUC / LogLoss of ``prob``, AUC of every other ``<name>_prob``, and
  gAUC over the split's ``group`` column (its user) where it has one."""
  y = pred["label"]
  out = {f"{prefix}/auc": float(metrics_lib.auc(y, pred["prob"])),
         f"{prefix}/logloss": float(metrics_lib.logloss(y, pred["prob"]))}
  for key in sorted(pred):
    if key.endswith("_prob"):
      out[f"{prefix}/{key[:-len('_prob')]}_auc"] = float(
          metrics_lib.auc(y, pred[key]))
  if GROUP in pred:  # user-grouped AUC (impression-weighted)
    for k, v in metrics_lib.gauc_stats(y, pred["prob"], pred[GROUP]).items():
      out[f"{prefix}/{k}"] = v
  return out

