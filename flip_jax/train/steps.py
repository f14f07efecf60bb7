"""Pure train/eval steps (jitted by the loops with explicit shardings)."""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flip_jax import losses
from flip_jax.models import flip as flip_lib
from flip_jax.train import microbatch
from flip_jax.train import state as state_lib

# Batch keys the pretraining model reads; everything else stays on the host.
PRETRAIN_KEYS = ("ids", "input_ids", "attention_mask", "mtm_ids",
                 "mtm_positions", "mtm_labels", "mtm_weight", "mlm_input_ids",
                 "mlm_labels")


def step_rngs(rng, step, impl: str | None = None) -> dict[str, jax.Array]:
  """Per-step dropout / noise keys: fold_in(rng, step), then split.

  ``rng`` is raw key data of PRNG implementation ``impl`` (None = jax
  default); the keys returned are typed.
  """
  key = state_lib.fold_step(rng, step, impl)
  dropout, noise = jax.random.split(key)
  return {"dropout": dropout, "noise": noise}


def pretrain_step(state, batch, consts, *, model,
                  tx: optax.GradientTransformation, micro_batches: int = 1,
                  rng_impl: str | None = None):
  """One FLIP pretraining step: the three losses, grads and the update.

  Args:
    state: TrainState (step, params, opt_state, rng, model_state). A
      BatchNorm backbone's statistics (``model_state``) are updated by its
      training-mode passes, as in PyTorch.
    batch: global batch (PRETRAIN_KEYS).
    consts: model constants (``log_q`` ...).
    model: FlipPretrainModel.
    tx: optimizer.
    micro_batches: M > 1 accumulates the grads of M micro-batches (see
      ``micro_batched_grads``); same loss and gradient as M = 1 up to the
      dropout draws and float summation order.
    rng_impl: PRNG implementation of ``state.rng`` (``config.prng_impl``).

  Returns:
    (new state, metrics dict of scalars named ``train/...``).
  """
  rngs = step_rngs(state.rng, state.step, rng_impl)
  if micro_batches > 1:
    out, grads, model_state = micro_batched_grads(
        state.params, batch, consts, rngs, model=model, num=micro_batches,
        model_state=state.model_state)
  else:
    def loss_fn(params):
      out, model_state = state_lib.apply_train(
          model, params, state.model_state, batch, consts,
          deterministic=False, rngs=rngs)
      return out["loss"], (out, model_state)

    (_, (out, model_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {f"train/{k}": v for k, v in out.items()}
  metrics["train/grad_norm"] = optax.global_norm(grads)
  new_state = state.replace(step=state.step + 1, params=params,
                            opt_state=opt_state, model_state=model_state)
  return new_state, metrics


def micro_batched_grads(params, batch, consts, rngs, *, model, num: int,
                        model_state=None):
  """The pretraining loss's metrics and grads, accumulated over micro-batches.

  MTM and MLM are sums over examples and split exactly (each micro-batch
  contributes its share of the global means, ``flip.loss_norms``). ICL's
  negatives are the whole global batch, so it uses cached gradients
  (GradCache, Gao et al. 2021): (1) the ICL views of every micro-batch are
  computed without keeping activations, (2) ICL and its gradient w.r.t. the
  views are computed on the global batch, (3) each micro-batch is run again
  with grads, ICL entering as the views dotted with their cached gradient.
  Step (3) draws the same dropout keys as (1), so the gradient equals the
  global batch's; the price is one more forward of the unmasked pass.

  A BatchNorm backbone normalises each micro-batch with its own statistics
  (as gradient accumulation does in PyTorch), so its gradient is not the
  whole batch's; (1) and (3) see the same micro-batch and agree. Its
  running statistics (``model_state``) are updated by (3) only, micro-batch
  after micro-batch.

  Returns:
    (metrics dict as ``FlipPretrainModel.__call__`` returns it, grads, the
    updated ``model_state``).
  """
  cfg = model.config
  micro = microbatch.split(batch, num)

  def rngs_of(i):
    return {k: jax.random.fold_in(v, i) for k, v in rngs.items()}

  metrics = {}
  cot = None
  if cfg.icl_enabled:
    def views(x):
      mb, i = x
      return state_lib.apply_train(
          model, params, model_state, microbatch.shard_rows(mb),
          deterministic=False, rngs=rngs_of(i), method=model.icl_views)[0]

    z_r, z_t = microbatch.merge(jax.lax.map(views, (micro, jnp.arange(num))))

    icl_fn = functools.partial(losses.icl_loss,
                               temperature=cfg.icl_temperature,
                               normalize=cfg.icl_normalize)
    (icl, logits), cot = jax.value_and_grad(icl_fn, argnums=(0, 1),
                                            has_aux=True)(z_r, z_t)
    cot = microbatch.split(
        jax.tree.map(lambda g: cfg.icl_weight * g.astype(jnp.float32), cot),
        num)
    metrics = {"icl_loss": icl, "icl_acc": losses.icl_accuracy(logits)}
  norms = flip_lib.loss_norms(batch, cfg)

  def chunk_loss(p, ms, x, i):
    mb, c = x
    out, ms = state_lib.apply_train(
        model, p, ms, mb, consts, deterministic=False, rngs=rngs_of(i),
        icl_cotangents=c, norms=norms)
    # out["loss"] = MTM and MLM shares + the ICL views . cached gradient.
    return out.pop("loss"), (out, ms)

  aux, grads, model_state = microbatch.accumulate(
      chunk_loss, params, (micro, cot), num, state=model_state or {})
  metrics.update(aux)
  metrics["loss"] = sum(getattr(cfg, f"{k}_weight") * metrics[f"{k}_loss"]
                        for k in ("icl", "mtm", "mlm") if f"{k}_loss" in metrics)
  return metrics, grads, model_state


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
