"""Sharded train-state initialisation, derived once from logical axes.

``sharded_state_init`` traces the model's init once (``eval_shape``; the
jitted initialiser reuses that trace), maps the params' logical axis names
to mesh shardings (replicating a dimension that does not divide its mesh
axis), shards the optimizer state like the params it mirrors, and returns
a jitted initialiser plus the abstract state (an orbax restore target).
``put_subtree`` places host values (pretrained weights) into a sharded
params tree.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import NamedSharding, PartitionSpec as P

from flip_jax import sharding
from flip_jax import tree_paths
from flip_jax.train import state as state_lib


def strip_boxes(tree):
  """Removes logical-partitioning boxes without applying any constraint."""
  return jax.tree.map(lambda x: x.value if isinstance(x, nn.Partitioned) else x,
                      tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def opt_state_shardings(opt_state, params, param_shardings, default):
  """Shards each optimizer-state leaf like the param it mirrors.

  An optimizer leaf (Adam's mu/nu, ...) whose dict-key path ends with a
  param's path and has its shape gets that param's sharding; counts and
  other leaves get ``default``.
  """
  flat_p = jax.tree_util.tree_flatten_with_path(params)[0]
  flat_s = jax.tree.leaves(param_shardings)
  table = {"/".join(tree_paths.dict_keys(path)): (leaf.shape, sh)
           for (path, leaf), sh in zip(flat_p, flat_s)}

  def pick(path, leaf):
    keys = tree_paths.dict_keys(path)
    for i in range(len(keys)):
      hit = table.get("/".join(keys[i:]))
      if hit is not None and hit[0] == getattr(leaf, "shape", None):
        return hit[1]
    return default
  return jax.tree_util.tree_map_with_path(pick, opt_state)


@dataclasses.dataclass
class ShardedInit:
  """Abstract state, its shardings, and a jitted initialiser."""
  abstract: Any
  shardings: Any
  init: Callable[[jax.Array], Any]


def sharded_state_init(init_variables: Callable[[jax.Array], Any],
                       make_state: Callable[[Any, Any, jax.Array], Any],
                       tx: optax.GradientTransformation, mesh, rules, *,
                       rng_impl: str | None = None) -> ShardedInit:
  """Derives state shardings once from the params' logical axis names.

  Args:
    init_variables: rng -> boxed variables (``model.init(...)``): ``params``
      and any other collections (BatchNorm's ``batch_stats``).
    make_state: (unboxed params, the other collections, rng) -> train state
      pytree whose ``params`` / ``opt_state`` fields hold the params and
      ``tx.init``; the other collections (``model_state``) are replicated.
    tx: the optimizer (to map param shardings onto its state).
    mesh: device mesh.
    rules: logical axis rules.
    rng_impl: PRNG implementation of the keys ``init`` will be given (their
      raw data is part of the state).

  Returns:
    ShardedInit with the abstract state (ShapeDtypeStructs carrying the
    shardings, usable as an orbax restore target) and a jitted init.
  """
  def from_variables(boxed_variables, rng):
    params, rest = state_lib.split_variables(nn.meta.unbox(boxed_variables))
    return make_state(params, rest, rng)

  repl = NamedSharding(mesh, P())
  jitted_init = jax.jit(init_variables)

  def model_init(rng):
    # The model's init is traced once: `eval_shape` below traces the jitted
    # init, and the jitted `_state` calls it again with an equal key type,
    # which jax answers from its trace cache (a nested call XLA inlines).
    # The constraint makes the key's type the same however the caller made
    # the key (inside or outside the mesh context).
    return jitted_init(jax.lax.with_sharding_constraint(rng, repl))

  def _state(rng):
    return from_variables(model_init(rng), rng)

  rng0 = state_lib.new_key(0, rng_impl)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abs_vars = jax.eval_shape(model_init, rng0)
    boxed = abs_vars["params"]
    param_sh = sharding.logical_to_sharding(boxed, mesh, rules)
    abs_params = strip_boxes(boxed)
    param_sh = sharding.with_divisible_fallback(param_sh, abs_params, mesh)
    abs_state = jax.eval_shape(from_variables, abs_vars, rng0)
  opt_sh = opt_state_shardings(abs_state.opt_state, abs_params, param_sh, repl)
  state_sh = jax.tree.map(lambda _: repl, abs_state)
  state_sh = state_sh.replace(params=param_sh, opt_state=opt_sh)

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    init = jax.jit(_state, out_shardings=state_sh)
  abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      abs_state, state_sh)
  return ShardedInit(abstract, state_sh, init)


def put_subtree(params, path: tuple[str, ...], value, shardings):
  """Replaces params[path...] with host values placed per ``shardings``."""
  def place(v, s):
    v = np.asarray(v)
    return jax.make_array_from_callback(v.shape, s, lambda idx: v[idx])
  node_sh = shardings
  for p in path:
    node_sh = node_sh[p]
  want = jax.tree.structure(node_sh)
  if jax.tree.structure(value) != want:
    raise ValueError(
        f"params/{'/'.join(path)}: loaded tree does not match the model "
        f"(loaded {jax.tree.structure(value)}, model {want})")
  placed = jax.tree.map(place, value, node_sh)
  out = dict(params)
  cur = out
  for p in path[:-1]:
    cur[p] = dict(cur[p])
    cur = cur[p]
  cur[path[-1]] = placed
  return out
