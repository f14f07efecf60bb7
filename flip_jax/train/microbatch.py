"""Gradient accumulation over micro-batches inside one jitted step.

A global batch [B, ...] is viewed as M micro-batches [M, B/M, ...] whose rows
are strided (micro-batch i holds rows i, i+M, ...), so with the batch axis
sharded over devices every micro-batch stays spread over all of them. The
grads of the micro-batches are summed in a ``lax.scan``: one micro-batch's
activations are alive at a time, which bounds the step's memory, and on
CPUs the smaller working set is also faster per example (see
benchmarks/README.md). Losses whose terms couple examples (FLIP's ICL over
the global batch) need the cached-gradient form in ``train.steps``.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import linen as nn


def split(tree: Any, num: int) -> Any:
  """Leaves [B, ...] -> [num, B // num, ...]; micro-batch i = rows i::num.

  The rows of each micro-batch keep the logical "batch" sharding (a no-op
  outside a mesh with logical axis rules).
  """
  def f(x):
    b = x.shape[0]
    if b % num:
      raise ValueError(f"micro_batches={num} does not divide the batch size "
                       f"{b}")
    y = jnp.swapaxes(x.reshape((b // num, num) + x.shape[1:]), 0, 1)
    return nn.with_logical_constraint(
        y, (None, "batch") + (None,) * (y.ndim - 2))
  return jax.tree.map(f, tree)


def shard_rows(tree: Any) -> Any:
  """Constrains the leading (row) axis of every leaf to logical "batch".

  Applied to the micro-batch a scan iteration slices out: sharding
  propagation does not reach into loop bodies reliably.
  """
  return jax.tree.map(lambda x: nn.with_logical_constraint(
      x, ("batch",) + (None,) * (x.ndim - 1)), tree)


def merge(tree: Any) -> Any:
  """Inverse of ``split``: [num, b, ...] -> [b * num, ...] in row order."""
  def f(x):
    x = jnp.swapaxes(x, 0, 1)
    return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])
  return jax.tree.map(f, tree)


def accumulate(loss_fn: Callable[..., tuple[jax.Array, Any]], params: Any,
               xs: Any, num: int, state: Any = None
               ) -> tuple[dict, Any, Any]:
  """Sums value, aux and grads of ``loss_fn`` over micro-batches.

  Args:
    loss_fn: (params, state, x_i, i) -> (scalar, (aux dict of arrays, new
      state)); x_i is the i-th slice of ``xs`` along its leading axis.
      ``state`` (BatchNorm statistics, or None) is threaded through the
      micro-batches in order, as consecutive steps would update it.
    params: differentiated argument.
    xs: pytree whose leaves have a leading axis of size ``num``.
    num: number of micro-batches.
    state: the initial non-differentiated state.

  Returns:
    (aux summed over micro-batches, grads summed over micro-batches, state
    after the last micro-batch).
  """
  grad_fn = jax.grad(loss_fn, has_aux=True)

  def body(carry, x):
    g_acc, st = carry
    xi, i = x
    g, (aux, st) = grad_fn(params, st, shard_rows(xi), i)
    # aux (scalar metrics) comes out per micro-batch and is summed below.
    return (jax.tree.map(jnp.add, g_acc, g), st), aux

  init = (jax.tree.map(jnp.zeros_like, params), state)
  (grads, state), aux = jax.lax.scan(body, init, (xs, jnp.arange(num)))
  return jax.tree.map(lambda a: jnp.sum(a, axis=0), aux), grads, state
