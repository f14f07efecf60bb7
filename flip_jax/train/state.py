"""Training state: one pytree holding everything a resume needs.

`TrainState` is a flax ``struct.PyTreeNode`` so it can be jitted with
shardings, donated, and saved/restored by orbax as a unit. Its array fields:

  step       int32 scalar: optimiser updates applied so far.
  params     the model params (plain nested dict, as Linen returns them).
  opt_state  the optax state of `tx`.
  rng        raw uint32 PRNG key data (``jax.random.key_data``), so orbax
             saves it as an ordinary array; `step_key` re-wraps it.
  model_state  the model's non-param variable collections, e.g.
             ``{'batch_stats': ...}`` of a BatchNorm backbone; ``{}`` for
             models without any. Updated by the train step, not by `tx`.

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
  model_state: Any = struct.field(default_factory=dict)

  @property
  def variables(self) -> dict[str, Any]:
    """``{'params': ..., **model_state}``: what ``model.apply`` takes."""
    return variables(self.params, self.model_state)

  def apply_gradients(self, grads, model_state=None) -> "TrainState":
    """Same as the module-level `apply_gradients`."""
    return apply_gradients(self, grads, model_state)


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
                       rng, model_state: dict[str, Any] | None = None
                       ) -> TrainState:
  """A fresh state at step 0.

  Args:
    params: model params pytree.
    tx: the optimiser (e.g. from `flip_jax.optim.build_optimizer`).
    rng: base PRNG key (typed key or raw uint32 data; stored raw).
    model_state: non-param collections (``{'batch_stats': ...}``), if any.

  Returns:
    TrainState with ``opt_state = tx.init(params)``.
  """
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params), rng=raw_key(rng), tx=tx,
                    model_state=dict(model_state or {}))


def split_variables(variables) -> tuple[Any, dict[str, Any]]:
  """``model.init`` output -> (params, the other collections)."""
  variables = dict(variables)
  return variables.pop("params"), variables


def variables(params, model_state) -> dict[str, Any]:
  """(params, model_state) -> the variables dict ``model.apply`` takes."""
  return {"params": params, **(model_state or {})}


def apply_train(model, params, model_state, *args, **kwargs):
  """``model.apply`` in training mode; returns (output, new model_state).

  The non-param collections (BatchNorm's ``batch_stats``) are mutable and
  their updates returned; a model without any is applied as usual and
  ``model_state`` comes back unchanged.
  """
  if not model_state:
    return model.apply({"params": params}, *args, **kwargs), model_state
  out, new = model.apply(variables(params, model_state), *args,
                         mutable=list(model_state), **kwargs)
  return out, dict(new)


def apply_gradients(state: TrainState, grads,
                    model_state=None) -> TrainState:
  """One optimiser update: optax update + apply_updates, step + 1.

  Args:
    state: current state.
    grads: gradients with the structure of ``state.params``.
    model_state: the non-param collections after this step's passes (e.g.
      BatchNorm's running statistics), or None to keep ``state``'s.

  Returns:
    The new state (rng unchanged: per-step randomness comes from
    `step_key`).
  """
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return state.replace(
      step=state.step + 1, params=params, opt_state=opt_state,
      model_state=state.model_state if model_state is None else model_state)


PRNG_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")


def new_key(seed: int, impl: str | None = None) -> jax.Array:
  """A typed base key of PRNG implementation `impl` (None = jax default).

  'threefry2x32' (the default) gives the same bits on every backend and
  mesh. 'rbg' and 'unsafe_rbg' draw random bits with XLA's RngBitGenerator
  (the accelerator's own counter-based generator, JAX's fast choice on
  TPUs), whose bits differ between backends; 'unsafe_rbg' also splits keys
  with it.
  """
  if impl is not None and impl not in PRNG_IMPLS:
    raise ValueError(f"prng_impl {impl!r}: expected one of {PRNG_IMPLS}")
  return jax.random.key(seed, impl=impl)


def step_key(state: TrainState, *, impl: str | None = None) -> jax.Array:
  """Typed PRNG key for the current step: ``fold_in(rng, step)``.

  Args:
    state: the train state.
    impl: PRNG implementation of the stored key data (None = jax default).

  Returns:
    A typed key; split it for dropout, masks, negatives, ...
  """
  return fold_step(state.rng, state.step, impl)


def fold_step(rng, step, impl: str | None = None) -> jax.Array:
  """Raw key data ``rng`` of implementation ``impl`` -> typed
  ``fold_in(rng, step)``."""
  return jax.random.fold_in(jax.random.wrap_key_data(rng, impl=impl), step)
