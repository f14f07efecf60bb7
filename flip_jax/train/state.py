"""Training state: one pytree holding everything a resume needs.

`TrainState` is a flax ``struct.PyTreeNode`` so it can be jitted with
shardings, donated, and saved/restored by orbax as a unit. Its array fields:

  step       int32 scalar: optimiser updates applied so far.
  params     the model params (plain nested dict, as Linen returns them).
  opt_state  the optax state of `tx`.
  rng        raw uint32 PRNG key data (``jax.random.key_data``), so orbax
             saves it as an ordinary array; `step_key` re-wraps it.

`tx` is a static (non-pytree) field: it is part of the tree definition and
never saved; a restore target is built with the same `tx`.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
  """Step, params, optimiser state and base RNG of a run."""
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  tx: optax.GradientTransformation = struct.field(pytree_node=False)

  def apply_gradients(self, grads) -> "TrainState":
    """Same as the module-level `apply_gradients`."""
    return apply_gradients(self, grads)


def raw_key(rng) -> jax.Array:
  """A typed key or raw uint32 key data -> raw uint32 key data."""
  rng = jnp.asarray(rng) if not isinstance(rng, jax.Array) else rng
  if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(rng)
  if rng.dtype != jnp.uint32:
    raise TypeError(f"rng: expected a PRNG key or uint32 key data, got "
                    f"dtype {rng.dtype}")
  return rng


def create_train_state(params, tx: optax.GradientTransformation,
                       rng) -> TrainState:
  """A fresh state at step 0.

  Args:
    params: model params pytree.
    tx: the optimiser (e.g. from `flip_jax.optim.build_optimizer`).
    rng: base PRNG key (typed key or raw uint32 data; stored raw).

  Returns:
    TrainState with ``opt_state = tx.init(params)``.
  """
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params), rng=raw_key(rng), tx=tx)


def apply_gradients(state: TrainState, grads) -> TrainState:
  """One optimiser update: optax update + apply_updates, step + 1.

  Args:
    state: current state.
    grads: gradients with the structure of ``state.params``.

  Returns:
    The new state (rng unchanged: per-step randomness comes from
    `step_key`).
  """
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return state.replace(step=state.step + 1, params=params,
                       opt_state=opt_state)


def step_key(state: TrainState, *, impl: str | None = None) -> jax.Array:
  """Typed PRNG key for the current step: ``fold_in(rng, step)``.

  Args:
    state: the train state.
    impl: PRNG implementation of the stored key data (None = jax default).

  Returns:
    A typed key; split it for dropout, masks, negatives, ...
  """
  return jax.random.fold_in(jax.random.wrap_key_data(state.rng, impl=impl),
                            state.step)
