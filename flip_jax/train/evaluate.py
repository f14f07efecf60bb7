"""Batched, sharded prediction over a whole split, and exact CTR metrics.

Evaluation pads the last batch (weight 0, row_id -1); predictions are
gathered from every process and the padding is dropped before AUC / LogLoss
are computed on the host over the entire split.
"""
from __future__ import annotations

from typing import Callable

import jax
import numpy as np
from flax import linen as nn
from jax.experimental import multihost_utils

from flip_jax import metrics as metrics_lib
from flip_jax import sharding
from flip_jax.data import pipeline

CTR_KEYS = ("ids",)
TEXT_KEYS = ("input_ids", "attention_mask")


def model_keys(mode: str) -> tuple[str, ...]:
  return {"id": CTR_KEYS, "plm": TEXT_KEYS, "joint": CTR_KEYS + TEXT_KEYS}[mode]


def make_predict_fn(model: nn.Module, mesh, rules,
                    variable_shardings) -> Callable:
  """jit(variables, batch) -> dict of probabilities (``prob``, per branch).

  ``variables`` is ``{'params': ..., **model_state}`` (BatchNorm layers use
  their running statistics); ``variable_shardings`` its shardings or None.
  """

  def predict(variables, batch):
    out = model.apply(variables, batch, deterministic=True)
    probs = {"prob": jax.nn.sigmoid(out["logit"])}
    for k in ("ctr/logit", "txt/logit"):
      if k in out and "alpha" in out:
        probs[k.split("/")[0] + "_prob"] = jax.nn.sigmoid(out[k])
    return probs

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    return jax.jit(predict, in_shardings=(variable_shardings, None))


def predict_split(predict_fn, variables, columns, *, keys, batch_size: int, mesh,
                  rules) -> dict[str, np.ndarray]:
  """Scores every row of a split; returns host arrays in row order."""
  outs: dict[str, list[np.ndarray]] = {}
  shardings = {k: sharding.batch_sharding(mesh, rules, np.ndim(columns[k]))
               for k in keys}
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    for local in pipeline.eval_batches(columns, global_batch_size=batch_size):
      batch = sharding.global_batch({k: local[k] for k in keys}, mesh, rules,
                                    shardings)
      pred = predict_fn(variables, batch)
      extra = {"label": local["label"], "weight": local["weight"],
               "row_id": local["row_id"]}
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


def ctr_metrics(pred: dict[str, np.ndarray], prefix: str) -> dict[str, float]:
  """AUC / LogLoss of ``prob`` (and of each branch for the joint model)."""
  y = pred["label"]
  out = {f"{prefix}/auc": float(metrics_lib.auc(y, pred["prob"])),
         f"{prefix}/logloss": float(metrics_lib.logloss(y, pred["prob"]))}
  for branch in ("ctr", "txt"):
    key = f"{branch}_prob"
    if key in pred:
      out[f"{prefix}/{branch}_auc"] = float(metrics_lib.auc(y, pred[key]))
  return out


def evaluate(predict_fn, variables, columns, *, keys, batch_size, mesh, rules,
             prefix: str) -> dict[str, float]:
  pred = predict_split(predict_fn, variables, columns, keys=keys,
                       batch_size=batch_size, mesh=mesh, rules=rules)
  return ctr_metrics(pred, prefix)

