"""Pure train/eval steps (jitted by the loops with explicit shardings)."""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
import optax

# Batch keys the pretraining model reads; everything else stays on the host.
PRETRAIN_KEYS = ("ids", "input_ids", "attention_mask", "mtm_ids",
                 "mtm_positions", "mtm_labels", "mtm_weight", "mlm_input_ids",
                 "mlm_labels")


def step_rngs(rng, step) -> dict[str, jax.Array]:
  """Per-step dropout / noise keys: fold_in(rng, step), then split."""
  key = jax.random.fold_in(rng, step)
  dropout, noise = jax.random.split(key)
  return {"dropout": dropout, "noise": noise}


def pretrain_step(state, batch, consts, *, model, tx: optax.GradientTransformation):
  """One FLIP pretraining step: the three losses, grads and the update.

  Args:
    state: TrainState (step, params, opt_state, rng).
    batch: global batch (PRETRAIN_KEYS).
    consts: model constants (``log_q`` ...).
    model: FlipPretrainModel.
    tx: optimizer.

  Returns:
    (new state, metrics dict of scalars named ``train/...``).
  """
  rngs = step_rngs(state.rng, state.step)

  def loss_fn(params):
    out = model.apply({"params": params}, batch, consts, deterministic=False,
                      rngs=rngs)
    return out["loss"], out

  (_, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {f"train/{k}": v for k, v in out.items()}
  metrics["train/grad_norm"] = optax.global_norm(grads)
  new_state = state.replace(step=state.step + 1, params=params,
                            opt_state=opt_state)
  return new_state, metrics


def fetch_metrics(history: list[dict[str, Any]]) -> dict[str, np.ndarray]:
  """Device metrics of several steps -> {name: [steps]} in one transfer."""
  host = jax.device_get(history)
  return {k: np.asarray([h[k] for h in host], np.float64) for k in host[0]}


def drain_metrics(history: list[dict[str, Any]], step: int) -> dict[str, float]:
  """Fetches the metrics of the last len(history) steps (the one host sync).

  Every step's loss terms are checked (a non-finite one raises
  FloatingPointError naming that step and every term); returns the means.
  """
  from flip_jax.train import logging as log_lib  # pylint: disable=g-import-not-at-top
  values = fetch_metrics(history)
  first = step - len(history) + 1
  for i in range(len(history)):
    log_lib.check_finite(first + i, {k: v[i] for k, v in values.items()
                                     if k.endswith("loss")})
  return {k: float(np.mean(v)) for k, v in values.items()}
