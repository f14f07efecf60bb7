"""The one training step of every task (jitted by the loop with shardings).

``train_step`` draws the step's keys, asks the task for the loss metrics and
gradients of the global batch (whole, or accumulated over micro-batches),
applies the optimizer update and returns scalar metrics named ``train/...``.
The host reads those metrics back only at logging intervals
(``drain_metrics``).
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
import optax

from flip_jax.train import logging as log_lib
from flip_jax.train import state as state_lib


def step_rngs(rng, step, streams: tuple[str, ...] = ("dropout", "noise"),
              impl: str | None = None) -> dict[str, jax.Array]:
  """Per-step keys: ``fold_in(rng, step)``, split over ``streams``.

  One stream takes the folded key itself; several take
  ``jax.random.split(key, len(streams))`` in order. ``rng`` is raw key data
  of PRNG implementation ``impl`` (None = jax default); the keys returned
  are typed.
  """
  key = state_lib.fold_step(rng, step, impl)
  if len(streams) == 1:
    return {streams[0]: key}
  return dict(zip(streams, jax.random.split(key, len(streams))))


def train_step(state, batch, consts, *, task, micro_batches: int = 1,
               rng_impl: str | None = None):
  """One optimizer step of ``task`` on the global ``batch``.

  Args:
    state: TrainState (step, params, opt_state, rng, model_state); a
      BatchNorm backbone's statistics (``model_state``) are updated by the
      task's training-mode passes.
    batch: the global batch (the data's ``train_keys``).
    consts: the task's replicated constants.
    task: a ``flip_jax.train.task.Task`` (static).
    micro_batches: M > 1 accumulates the gradient of M micro-batches (same
      loss and gradient up to the dropout draws and summation order).
    rng_impl: PRNG implementation of ``state.rng`` (``config.prng_impl``).

  Returns:
    (new state, metrics dict of scalars named ``train/...``).
  """
  rngs = step_rngs(state.rng, state.step, task.rng_streams, rng_impl)
  metrics, grads, model_state = task.grads(
      state.params, state.model_state, batch, consts, rngs,
      micro_batches=micro_batches)
  metrics = {f"train/{k}": v for k, v in metrics.items()}
  metrics["train/grad_norm"] = optax.global_norm(grads)
  return state.apply_gradients(grads, model_state), metrics


def fetch_metrics(history: list[dict[str, Any]]) -> dict[str, np.ndarray]:
  """Device metrics of several steps -> {name: [steps]} in one transfer."""
  host = jax.device_get(history)
  return {k: np.asarray([h[k] for h in host], np.float64) for k in host[0]}


def drain_metrics(history: list[dict[str, Any]], step: int) -> dict[str, float]:
  """Fetches the metrics of the last len(history) steps (the one host sync).

  Every step's loss terms are checked (a non-finite one raises
  FloatingPointError naming that step and every term); returns the means.
  """
  values = fetch_metrics(history)
  first = step - len(history) + 1
  for i in range(len(history)):
    log_lib.check_finite(first + i, {k: v[i] for k, v in values.items()
                                     if k.endswith("loss")})
  return {k: float(np.mean(v)) for k, v in values.items()}
