"""Per-field vocabularies in one field-offset global id space (FLIP.md 2.3).

Every field reserves local id 0 = OOV (a value not in the vocabulary) and
local id 1 = MASK (the MTM overwrite id); real values get local ids 2.. in
sorted order. global id = offset[field] + local id, and
N = num_features = sum of the vocab sizes. Vocabularies are built on the
pretraining rows (train + valid; labels unused); `counts` [N] counts the
global ids over those rows and is the MTM noise distribution (FLIP.md 2.8);
reserved ids count 0.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Sequence

import numpy as np

from flip_jax import jsonio
from flip_jax.data import rawparse

OOV, MASK = 0, 1
NUM_RESERVED = 2
FORMAT_VERSION = 1


def _obj(values) -> np.ndarray:
  out = np.empty(len(values), dtype=object)
  out[:] = list(values)
  return out


def counts_hash(counts: np.ndarray) -> str:
  """sha256 of the int64 little-endian count vector."""
  return hashlib.sha256(
      np.ascontiguousarray(counts, dtype="<i8").tobytes()).hexdigest()


@dataclasses.dataclass
class FeatureMap:
  """Field vocabularies, offsets and feature counts.

  Attributes:
    field_names: internal field names, in field order.
    display_names: clause names of the text template.
    vocabs: per field, the sorted real values (local id = 2 + position).
    counts: int64 [N] occurrences over the pretraining rows.
    meta: recorded rules: row ordering, label rule, split sizes, protocol...
  """
  field_names: tuple[str, ...]
  display_names: tuple[str, ...]
  vocabs: list[np.ndarray]
  counts: np.ndarray
  meta: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    self.field_names = tuple(self.field_names)
    self.display_names = tuple(self.display_names)
    sizes = np.array([len(v) + NUM_RESERVED for v in self.vocabs], np.int64)
    self.vocab_sizes = sizes
    self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    self.counts = np.asarray(self.counts, np.int64)
    if self.counts.shape != (int(sizes.sum()),):
      raise ValueError(f"counts has shape {self.counts.shape}, expected "
                       f"({int(sizes.sum())},)")

  @property
  def num_fields(self) -> int:
    return len(self.field_names)

  @property
  def num_features(self) -> int:
    return int(self.vocab_sizes.sum())

  def oov_ids(self) -> np.ndarray:
    """Global OOV id of every field, int32 [F]."""
    return (self.offsets + OOV).astype(np.int32)

  def mask_ids(self) -> np.ndarray:
    """Global MASK id of every field, int32 [F]."""
    return (self.offsets + MASK).astype(np.int32)

  def reserved_ids(self) -> np.ndarray:
    """All reserved (OOV and MASK) global ids, sorted int32."""
    return np.sort(np.concatenate([self.oov_ids(), self.mask_ids()]))

  def is_reserved(self, global_ids: np.ndarray) -> np.ndarray:
    """Elementwise: is this global id an OOV or MASK id of its field?"""
    return np.isin(global_ids, self.reserved_ids())

  @classmethod
  def build(cls, field_names: Sequence[str], display_names: Sequence[str],
            keys: Sequence[np.ndarray], meta: dict | None = None
            ) -> "FeatureMap":
    """Builds vocabularies and counts from the pretraining rows' keys.

    Args:
      field_names: field names.
      display_names: clause names.
      keys: per field, object array of string keys of the pretraining rows.
      meta: rules to record.

    Returns:
      The FeatureMap.
    """
    vocabs, parts = [], []
    for k in keys:
      uniq, inv = rawparse.factorize(k)
      cnt = np.bincount(inv, minlength=len(uniq))
      vocabs.append(uniq)
      parts.append(np.concatenate([[0] * NUM_RESERVED, cnt]))
    return cls(field_names, display_names, vocabs,
               np.concatenate(parts).astype(np.int64), meta or {})

  def encode(self, keys: Sequence[np.ndarray]) -> np.ndarray:
    """Maps per-field string keys to global ids (unknown -> OOV), int32 [n,F].

    Args:
      keys: per field, an array [n] of string keys.

    Returns:
      int32 [n, F] global ids.
    """
    if len(keys) != self.num_fields:
      raise ValueError(f"encode: {len(keys)} key columns for "
                       f"{self.num_fields} fields")
    n = len(keys[0]) if keys else 0
    out = np.empty((n, self.num_fields), np.int32)
    for f, k in enumerate(keys):
      lookup = self._lookup(f)
      local = np.fromiter((lookup.get(x, OOV) for x in k), np.int64, len(k))
      out[:, f] = self.offsets[f] + local
    return out

  def _lookup(self, f: int) -> dict:
    if not hasattr(self, "_lookups"):
      self._lookups = {}
    if f not in self._lookups:
      self._lookups[f] = {str(v): i + NUM_RESERVED
                          for i, v in enumerate(self.vocabs[f])}
    return self._lookups[f]

  def decode(self, global_ids: np.ndarray) -> list[list[str]]:
    """Inverse of encode for inspection: rows of per-field keys.

    OOV and MASK decode to '<oov>' and '<mask>'.
    """
    global_ids = np.asarray(global_ids).reshape(-1, self.num_fields)
    rows = []
    for r in global_ids:
      row = []
      for f, g in enumerate(r):
        local = int(g) - int(self.offsets[f])
        if not 0 <= local < self.vocab_sizes[f]:
          raise ValueError(f"id {g} is not in field {self.field_names[f]}")
        row.append("<oov>" if local == OOV else "<mask>" if local == MASK
                   else str(self.vocabs[f][local - NUM_RESERVED]))
      rows.append(row)
    return rows

  def to_json(self) -> dict:
    fields = [{"name": n, "display_name": d, "vocab_size": int(s),
               "offset": int(o), "oov_id": int(o + OOV),
               "mask_id": int(o + MASK), "values": [str(x) for x in v]}
              for n, d, s, o, v in zip(self.field_names, self.display_names,
                                       self.vocab_sizes, self.offsets,
                                       self.vocabs)]
    return {
        "format_version": FORMAT_VERSION,
        "num_fields": self.num_fields,
        "num_features": self.num_features,
        "reserved_local_ids": {"oov": OOV, "mask": MASK},
        "fields": fields,
        "counts_rows": "pretraining rows (train + valid); reserved ids 0",
        "counts_sha256": counts_hash(self.counts),
        "counts": self.counts.tolist(),
        **self.meta,
    }

  def save(self, path: str) -> None:
    """Writes JSON atomically; `path` may be a directory."""
    if os.path.isdir(path):
      path = os.path.join(path, "feature_map.json")
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(self.to_json(), f, ensure_ascii=False)
    os.replace(tmp, path)

  @classmethod
  def load(cls, path: str) -> "FeatureMap":
    """Reads `feature_map.json` (or a directory holding it), checking it."""
    if os.path.isdir(path):
      path = os.path.join(path, "feature_map.json")
    d = jsonio.read_json(path, expect=dict)
    if d.get("format_version") != FORMAT_VERSION:
      raise ValueError(f"{path}: format_version {d.get('format_version')} "
                       f"!= {FORMAT_VERSION}")
    try:
      fields = d["fields"]
      meta = {k: v for k, v in d.items() if k not in (
          "format_version", "num_fields", "num_features",
          "reserved_local_ids", "fields", "counts_rows", "counts_sha256",
          "counts")}
      fm = cls([x["name"] for x in fields],
               [x["display_name"] for x in fields],
               [_obj(x["values"]) for x in fields],
               np.asarray(d["counts"], np.int64), meta)
      for x, o, s in zip(fields, fm.offsets, fm.vocab_sizes):
        if x["offset"] != o or x["vocab_size"] != s:
          raise ValueError(f"{path}: field {x['name']} offset/vocab_size "
                           "disagree with its values list")
      if counts_hash(fm.counts) != d["counts_sha256"]:
        raise ValueError(f"{path}: counts do not match counts_sha256")
    except (KeyError, TypeError, IndexError) as e:
      raise ValueError(f"{path}: not a feature map (damaged? "
                       f"{type(e).__name__}: {e})") from e
    return fm


def first_difference(expected: FeatureMap, actual: FeatureMap) -> str | None:
  """Where ``actual`` first departs from ``expected``, or None if the same.

  Id for id: the field names, then field by field its vocabulary size, its
  values (a renamed user keeps the size but moves ids) and its feature
  counts (the same values counted over other rows). The phrase names the
  first field that differs.
  """
  names_a, names_b = list(expected.field_names), list(actual.field_names)
  if names_a != names_b:
    return f"fields {names_a} vs {names_b}"
  for f, name in enumerate(names_a):
    size_a, size_b = int(expected.vocab_sizes[f]), int(actual.vocab_sizes[f])
    if size_a != size_b:
      return f"field {name!r}: vocabulary of {size_a} ids vs {size_b}"
    values_a = [str(v) for v in expected.vocabs[f]]
    values_b = [str(v) for v in actual.vocabs[f]]
    if values_a != values_b:
      k = next(i for i, (a, b) in enumerate(zip(values_a, values_b)) if a != b)
      return (f"field {name!r}: id {k + NUM_RESERVED} is {values_a[k]!r} vs "
              f"{values_b[k]!r}")
    lo, hi = int(expected.offsets[f]), int(expected.offsets[f]) + size_a
    if not np.array_equal(expected.counts[lo:hi], actual.counts[lo:hi]):
      return f"field {name!r}: the feature counts differ (other rows counted)"
  return None
