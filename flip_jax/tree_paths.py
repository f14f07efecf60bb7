"""'/'-joined paths of param trees: one set of helpers for the whole package.

Two kinds of flattening, which differ in ORDER and in what they accept:

* `param_paths(tree)` walks any jax pytree (dicts, lists, dataclasses,
  optimiser states) with `jax.tree_util`: keys in pytree order, i.e. dict
  keys SORTED, sequence indices included (``a/c/0``).
* `flatten(tree)` walks nested mappings only, in INSERTION order, and keeps
  every non-mapping value as a leaf (what the name tables and the param
  exporters use); `unflatten` is its inverse. `flat_params` is `flatten`
  after removing Flax's logical-partitioning boxes.

Key-path pieces: `key_str` names any jax key entry (dict key, attribute,
sequence index); `dict_keys` keeps only dict keys and attribute names (so an
optimiser-state leaf ``0/mu/a/b`` gives ``['mu', 'a', 'b']``), which is how
optimiser leaves are matched to the param they mirror.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import jax
from flax import linen as nn

SEP = "/"


def key_str(key) -> str:
  """One jax key-path entry (DictKey, GetAttrKey, SequenceKey, ...) -> str."""
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def path_str(path: Iterable[Any]) -> str:
  """A jax key path -> '/'-joined string (every entry, indices included)."""
  return SEP.join(key_str(k) for k in path)


def dict_keys(path: Iterable[Any]) -> list[str]:
  """The dict keys and attribute names of a jax key path (indices dropped)."""
  return [str(getattr(k, "key", getattr(k, "name", ""))) for k in path
          if hasattr(k, "key") or hasattr(k, "name")]


def param_paths(tree) -> dict[str, Any]:
  """Flattens any pytree into {'/'-joined path: leaf}, in pytree order."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {path_str(p): leaf for p, leaf in leaves}


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """Nested mappings -> {'/'-joined path: leaf}, in insertion order.

  Empty sub-mappings vanish (as with `flax.traverse_util.flatten_dict`).
  """
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(flatten(v, f"{prefix}{k}{SEP}"))
    else:
      out[f"{prefix}{k}"] = v
  return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """{'/'-joined path: leaf} -> nested dicts (the inverse of `flatten`)."""
  out: dict[str, Any] = {}
  for path, v in flat.items():
    node = out
    *parents, leaf = path.split(SEP)
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = v
  return out


def flat_params(params: Any) -> dict[str, Any]:
  """Nested (possibly logically boxed) params -> {'a/b/c': array}."""
  return flatten(nn.meta.unbox(params))
