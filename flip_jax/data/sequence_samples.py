"""The built SRP4CTR samples as a parquet file, for inspection.

One row per rating with its history window as the raw item ids
(``prepare_data --sequences``; ``srp4ctr_workflow`` writes one beside its
data). The samples themselves are built by ``flip_jax.data.sequences``.
"""
from __future__ import annotations

import os

import numpy as np

from flip_jax.data import prepare
from flip_jax.data import sequences


def _raw_column(values: np.ndarray):
  """Raw ids as int64 when every one is a decimal number, else strings."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  if all(str(v).isdigit() for v in values):
    return pa.array(values.astype(np.int64))
  uniq, codes = np.unique(values.astype(str), return_inverse=True)
  return pa.DictionaryArray.from_arrays(codes.astype(np.int32),
                                        pa.array(uniq))


def write_samples(prepared, spec: sequences.SequenceSpec, out: str,
                  length: int) -> int:
  """Writes the built samples to parquet, one row per rating.

  Columns: row_id (position in the global time order), split, user_id,
  item_id (the target), timestamp, label and history (the window's item
  ids, as in the raw files, oldest first; empty for a user's first rating).

  Returns:
    The number of rows written.
  """
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  store = sequences.load_or_build(prepared, spec)
  fm = prepared.feature_map
  names = list(store.splits)
  item_f = sequences.field_index(fm, spec.item_field)
  items = np.concatenate([sequences.field_values(prepared.splits[s], item_f)
                          for s in names])
  begin = np.concatenate([store.splits[s]["hist_begin"] for s in names])
  end = np.concatenate([store.splits[s]["hist_end"] for s in names])
  lo = np.maximum(begin, end - length)
  sizes = end - lo
  pos = np.repeat(lo, sizes) + sequences.ranges(sizes)
  raw_items = _raw_column(items)
  history = pa.ListArray.from_arrays(
      pa.array(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)),
      raw_items.take(pa.array(store.event_row[pos])))
  split = np.concatenate([[s] * len(store.splits[s]["hist_end"])
                          for s in names])
  table = pa.table({
      "row_id": np.arange(len(items), dtype=np.int64),
      "split": pa.array(split).dictionary_encode(),
      "user_id": _raw_column(sequences.user_keys(prepared, spec)),
      "item_id": raw_items,
      "timestamp": np.concatenate([prepared.splits[s]["timestamp"]
                                   for s in names]).astype(np.int64),
      "label": np.concatenate([prepared.splits[s]["label"]
                               for s in names]).astype(np.int8),
      "history": history})
  out = os.path.abspath(out)
  os.makedirs(os.path.dirname(out), exist_ok=True)
  tmp = f"{out}.tmp{os.getpid()}"
  try:  # atomic: a crash leaves the previous file (or none), never half
    pq.write_table(table, tmp)
    os.replace(tmp, out)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return table.num_rows


def write_dataset_samples(data_cfg, workdir: str, out: str, length: int
                          ) -> int:
  """`write_samples` of a data config (``prepare_data --sequences``)."""
  prepared = prepare.load_dataset(
      data_cfg, prepare.default_cache_root(data_cfg, workdir))
  spec = sequences.SequenceSpec(
      "user_id", sequences.ITEM_FIELDS.get(data_cfg.dataset, "movie_id"),
      ("item",))
  return write_samples(prepared, spec, out, length)
