"""Device meshes and logical-axis sharding.

Model code names axes (``nn.with_logical_partitioning`` for params,
``nn.with_logical_constraint`` for activations); the config holds the mesh
shape and an ordered rules table mapping logical names onto mesh axes (the
names and the default table: ``flip_jax.sharding_rules``).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from absl import logging
import jax
import numpy as np
from flax import linen as nn
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from flip_jax.tree_paths import path_str


def mesh_shape(axes: Sequence[tuple[str, int]], num_devices: int) -> dict[str, int]:
  """Resolves (name, size) pairs with at most one -1 (= the rest)."""
  sizes = dict(axes)
  unknown = [k for k, v in sizes.items() if v == -1]
  if len(unknown) > 1:
    raise ValueError(f"mesh: at most one axis may be -1, got {axes}")
  known = int(np.prod([v for v in sizes.values() if v != -1]))
  if unknown:
    if num_devices % known:
      raise ValueError(
          f"mesh: {num_devices} devices not divisible by fixed axes {axes}")
    sizes[unknown[0]] = num_devices // known
  if int(np.prod(list(sizes.values()))) != num_devices:
    raise ValueError(f"mesh: {axes} does not use exactly {num_devices} devices")
  return sizes


def make_mesh(axes: Sequence[tuple[str, int]] = (("data", -1), ("fsdp", 1),
                                                 ("tensor", 1)),
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds a mesh with Auto axis types (logical constraints need them)."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = mesh_shape(axes, len(devices))
  names = tuple(sizes)
  shape = tuple(sizes[n] for n in names)
  try:
    dev = jax.experimental.mesh_utils.create_device_mesh(shape, devices)
  except Exception:  # pylint: disable=broad-except
    dev = np.asarray(devices).reshape(shape)
  return Mesh(dev, names, axis_types=(AxisType.Auto,) * len(names))


def rules_from_config(rules) -> tuple[tuple[str, Any], ...]:
  """ConfigDict/list form -> tuple of (logical, mesh axis or tuple or None)."""
  out = []
  for name, target in rules:
    if isinstance(target, list):
      target = tuple(target)
    out.append((name, target))
  return tuple(out)


def _filter_rules(rules, mesh: Mesh):
  """Drops mesh axes of size 1 or absent from the mesh (keeps specs valid)."""
  out = []
  for name, target in rules:
    if target is None:
      out.append((name, None))
      continue
    tgt = (target,) if isinstance(target, str) else tuple(target)
    tgt = tuple(a for a in tgt if a in mesh.shape and mesh.shape[a] > 1)
    out.append((name, tgt if len(tgt) > 1 else (tgt[0] if tgt else None)))
  return tuple(out)


def logical_to_spec(names: Sequence[str | None], rules, mesh: Mesh) -> P:
  """Logical axis names of one array -> PartitionSpec.

  The first rule of each name wins; a mesh axis is used at most once per
  array (a later dimension that would reuse it stays replicated), so names
  may repeat (e.g. a square (rank, rank) kernel).
  """
  table: dict[str, Any] = {}
  for name, target in _filter_rules(rules, mesh):
    table.setdefault(name, target)
  used: set[str] = set()
  spec = []
  for name in names:
    target = table.get(name) if isinstance(name, str) else None
    axes = () if target is None else (
        (target,) if isinstance(target, str) else tuple(target))
    axes = tuple(a for a in axes if a not in used)
    used.update(axes)
    spec.append(None if not axes else (axes[0] if len(axes) == 1 else axes))
  return P(*spec)


def logical_to_sharding(abstract_tree, mesh: Mesh, rules):
  """Boxed (logically partitioned) tree -> tree of NamedShardings.

  Leaves without logical metadata are replicated. The result has the
  structure of ``nn.meta.unbox(abstract_tree)``.
  """
  def to_sharding(leaf):
    if isinstance(leaf, nn.Partitioned):
      return NamedSharding(mesh, logical_to_spec(leaf.names, rules, mesh))
    return NamedSharding(mesh, P())
  return jax.tree.map(to_sharding, abstract_tree,
                      is_leaf=lambda x: isinstance(x, nn.Partitioned))


@dataclasses.dataclass(frozen=True)
class Fallback:
  """One array dimension left replicated because it does not divide its axis.

  Attributes:
    path: the leaf's path in the sharding tree, e.g. 'params/ctr/embedding'.
    shape: the leaf's full shape.
    dim: the dimension that was replicated instead of sharded.
    axes: the mesh axes that dimension was mapped to (now dropped).
    axis_size: the product of those mesh axes' sizes (does not divide
      shape[dim]).
  """
  path: str
  shape: tuple[int, ...]
  dim: int
  axes: tuple[str, ...]
  axis_size: int

  def __str__(self) -> str:
    return (f"{self.path} {list(self.shape)} dim {self.dim} "
            f"(size {self.shape[self.dim]}) on mesh axes {self.axes} "
            f"(size {self.axis_size})")


def _divisible(shardings, abstract_tree, mesh: Mesh):
  """(shardings with non-dividing dims replicated, list of Fallback)."""
  fallbacks: list[Fallback] = []

  def fix(path, s, x):
    if not isinstance(s, NamedSharding):
      return s
    shape = tuple(int(d) for d in getattr(x, "shape", ()))
    spec = list(s.spec) + [None] * (len(shape) - len(s.spec))
    new = []
    for i, (dim, ax) in enumerate(zip(shape, spec)):
      if ax is None:
        new.append(None)
        continue
      axes = (ax,) if isinstance(ax, str) else tuple(ax)
      size = int(np.prod([mesh.shape[a] for a in axes]))
      if dim % size == 0:
        new.append(ax)
      else:
        new.append(None)
        fallbacks.append(Fallback(path_str(path), shape, i, axes, size))
    return NamedSharding(mesh, P(*new))

  out = jax.tree_util.tree_map_with_path(fix, shardings,
                                         nn.meta.unbox(abstract_tree))
  return out, fallbacks


def divisible_fallbacks(shardings, abstract_tree, mesh: Mesh
                        ) -> list[Fallback]:
  """The dimensions `with_divisible_fallback` replicates (no logging)."""
  return _divisible(shardings, abstract_tree, mesh)[1]


def with_divisible_fallback(shardings, abstract_tree, mesh: Mesh):
  """Replaces a sharding by replication where a dim is not divisible.

  Logs one warning per call listing every replicated dimension (see
  `divisible_fallbacks` for the list itself).
  """
  out, fallbacks = _divisible(shardings, abstract_tree, mesh)
  if fallbacks:
    logging.warning(
        "sharding: %d dimension(s) do not divide their mesh axes and are "
        "replicated instead: %s", len(fallbacks),
        "; ".join(str(f) for f in fallbacks))
  return out


def batch_sharding(mesh: Mesh, rules, ndim: int = 1) -> NamedSharding:
  """Sharding of a batch array: leading axis over the data axes."""
  rules = _filter_rules(rules, mesh)
  axis = dict(rules).get("batch")
  return NamedSharding(mesh, P(axis, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local: dict[str, np.ndarray], mesh: Mesh, rules,
                 shardings: dict[str, NamedSharding] | None = None):
  """Per-process numpy batch -> global jax.Arrays sharded over data axes.

  Pass ``shardings`` (from `batch_sharding`, built once) in a step loop.
  """
  return {
      k: jax.make_array_from_process_local_data(
          shardings[k] if shardings is not None
          else batch_sharding(mesh, rules, np.ndim(v)), np.asarray(v))
      for k, v in local.items()
  }
