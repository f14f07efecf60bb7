"""The default gradient of a task: a data loss plus a params loss.

``LossTask`` implements the seam's ``grads`` (``flip_jax.train.task``) from
four smaller hooks that only it calls:

* ``data_loss``: the data terms on the global batch, or one micro-batch's
  share of them (taking the global batch's ``loss_norms``);
* ``loss_norms``: the denominators of those means over the global batch;
* ``param_loss``: terms of the params alone (explicit L2);
* ``step_metrics``: metrics read from the params once per step.

Without micro-batches the sum is differentiated at once; with M > 1 the
data terms are accumulated over strided micro-batches
(``flip_jax.train.microbatch``, each with its own fold of the step keys) and
the params terms added once. Every task derives from ``LossTask``; FLIP
pretraining overrides ``grads`` with micro-batches (cached-gradient ICL).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from flip_jax.train import microbatch
from flip_jax.train import task as task_lib


class LossTask(task_lib.Task):
  """A task whose gradient is that of ``data_loss`` + ``param_loss``."""

  def loss_norms(self, batch) -> Any:
    """Denominators of the loss means over the whole (global) batch.

    Micro-batches divide their summed terms by these, so that the
    micro-batches' shares add up to the global batch's loss.
    """
    del batch
    return None

  def data_loss(self, params, model_state, batch, consts, rngs, norms=None):
    """The data terms of the loss.

    Args:
      params, model_state: the model's variables.
      batch: the global batch (``norms`` None) or one micro-batch.
      consts: ``data.consts`` placed on the devices.
      rngs: {stream: typed key}.
      norms: None, or ``loss_norms`` of the global batch (micro-batch mode:
        return this micro-batch's share of the global loss).

    Returns:
      (loss, (metrics dict of scalars, new model_state)).
    """
    raise NotImplementedError

  def param_loss(self, params):
    """Terms of the params alone (explicit L2): (loss or None, metrics)."""
    del params
    return None, {}

  def step_metrics(self, params, model_state, metrics: dict) -> dict:
    """Metrics read from the params once per step (e.g. a mixing weight)."""
    del params, model_state
    return metrics

  def grads(self, params, model_state, batch, consts, rngs, *,
            micro_batches: int):
    """(metrics, grads, new model_state) of the loss on the global batch.

    Differentiates ``data_loss`` + ``param_loss``; with ``micro_batches``
    > 1 the data terms are accumulated over strided micro-batches (each with
    its own fold of the step keys) and the param terms added once.
    """
    if micro_batches <= 1:
      def loss_fn(p):
        total, (metrics, ms) = self.data_loss(p, model_state, batch, consts,
                                              rngs)
        reg, reg_metrics = self.param_loss(p)
        if reg is not None:
          total = total + reg
        metrics = {**metrics, **reg_metrics, "loss": total}
        return total, (metrics, ms)
      (_, (metrics, ms)), grads = jax.value_and_grad(
          loss_fn, has_aux=True)(params)
      return self.step_metrics(params, ms, metrics), grads, ms

    norms = self.loss_norms(batch)

    def chunk(p, ms, mb, i):
      r = {k: jax.random.fold_in(v, i) for k, v in rngs.items()}
      total, (metrics, ms) = self.data_loss(p, ms, mb, consts, r, norms)
      return total, ({**metrics, "data_loss": total}, ms)

    metrics, grads, ms = microbatch.accumulate(
        chunk, params, microbatch.split(batch, micro_batches), micro_batches,
        state=model_state or {})
    (reg, reg_metrics), reg_grads = jax.value_and_grad(
        lambda p: _zero_if_none(self.param_loss(p)), has_aux=True)(params)
    if reg_metrics:
      grads = jax.tree.map(jnp.add, grads, reg_grads)
      metrics.update(reg_metrics)
    metrics["loss"] = metrics.pop("data_loss") + (reg if reg_metrics else 0.0)
    return self.step_metrics(params, ms, metrics), grads, ms


def _zero_if_none(out):
  loss, metrics = out
  if loss is None:
    return jnp.zeros((), jnp.float32), {}
  return loss, metrics
