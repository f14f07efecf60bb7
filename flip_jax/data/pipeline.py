"""Per-process batches on grain: seeded training stream and padded eval.

Training: epoch e visits the rows in the permutation
`default_rng([seed, e]).permutation(n)`; global step s of the epoch takes
rows [s*G, (s+1)*G) of it (the remainder is dropped) and process p keeps
its contiguous slice of G // process_count rows. So the global batch does
not depend on the number of processes, and every process knows it. Each
element of the grain `MapDataset` is one per-process batch (a numpy dict), so
an iterator's state is just the next step: `get_state()` / `set_state()`
restore the stream exactly, with or without worker processes. A task's
batch transform (FLIP's masks) is keyed by (seed, epoch, the example's
position in `columns`), so it is as reproducible as the order.

Evaluation: all rows in order, batch b = rows [b*G, (b+1)*G), process p
its slice; the last batch is padded (copies of row 0) with weight 0 and row_id
-1, and every process yields the same number of batches.

Batch contract (numpy): every column of the split, integers as int32 and
floats as float32 (label float32 [B], row_id int32 [B]), plus weight float32
[B]; then whatever the task's transform adds. FLIP's columns: ids int32
[B, F]; input_ids, attention_mask, token_field int32 [B, L]; its masks add
mlm_input_ids, mlm_labels [B, L], mtm_ids [B, F], mtm_positions,
mtm_labels int32 [B, M] and mtm_weight float32 [B, M].
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

import grain
import numpy as np


# Columns every split has (the rest are the task's: ids, text, ...).
REQUIRED_COLUMNS = ("label", "row_id")


def steps_per_epoch(num_rows: int, global_batch_size: int) -> int:
  """Training steps per epoch (drop remainder)."""
  if global_batch_size <= 0:
    raise ValueError(f"global_batch_size {global_batch_size} must be > 0")
  return num_rows // global_batch_size


def _process(process_index, process_count) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = (jax.process_index() if process_index is None
                     else process_index)
    process_count = (jax.process_count() if process_count is None
                     else process_count)
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in "
                     f"[0, {process_count})")
  return process_index, process_count


def _local_batch(global_batch_size: int, process_count: int) -> int:
  if global_batch_size % process_count:
    raise ValueError(f"global_batch_size {global_batch_size} is not divisible "
                     f"by process_count {process_count}")
  return global_batch_size // process_count


class _Columns:
  """Column arrays that pickle memory-mapped files by name (for workers).

  Every column is batched: integer columns as int32, float columns as
  float32 (``label`` included); ``weight`` (1) is added.
  """

  def __init__(self, columns: Mapping[str, np.ndarray]):
    missing = [k for k in REQUIRED_COLUMNS if k not in columns]
    if missing:
      raise ValueError(f"columns lack {missing}; have {sorted(columns)}")
    self.names = sorted(columns)
    self.arrays = {k: columns[k] for k in self.names}
    n = len(self.arrays["label"])
    for k, a in self.arrays.items():
      if len(a) != n:
        raise ValueError(f"column {k} has {len(a)} rows, label has {n}")
      if np.asarray(a[:0]).dtype.kind not in "iufb":
        raise ValueError(f"column {k}: dtype {a.dtype} is not numeric")
    self.num_rows = n

  def __getstate__(self):
    state = {}
    for k, a in self.arrays.items():
      fname = getattr(a, "filename", None)
      # Only a whole, unsliced file mapping can be reopened by name.
      if fname and not (a.flags.c_contiguous and np.load(
          fname, mmap_mode="r").shape == a.shape):
        fname = None
      state[k] = ("mmap", fname) if fname else ("array", np.asarray(a))
    return {"names": self.names, "state": state, "num_rows": self.num_rows}

  def __setstate__(self, d):
    self.names, self.num_rows = d["names"], d["num_rows"]
    self.arrays = {k: (np.load(v, mmap_mode="r") if kind == "mmap" else v)
                   for k, (kind, v) in d["state"].items()}

  def gather(self, idx: np.ndarray) -> dict:
    out = {}
    for k, a in self.arrays.items():
      v = np.asarray(a[idx])
      out[k] = v.astype(np.float32 if v.dtype.kind == "f" or k == "label"
                        else np.int32)
    out["weight"] = np.ones(len(idx), np.float32)
    return out


class _TrainBatch:
  """index (global step) -> this process's batch; picklable for workers."""

  def __init__(self, columns, *, global_batch_size, local_batch_size,
               process_index, seed, transform):
    self.columns = columns
    self.global_batch_size = global_batch_size
    self.local_batch_size = local_batch_size
    self.process_index = process_index
    self.seed = seed
    self.transform = transform
    self.steps = steps_per_epoch(columns.num_rows, global_batch_size)
    self._perm = (None, None)

  def __getstate__(self):
    d = dict(self.__dict__)
    d["_perm"] = (None, None)
    return d

  def permutation(self, epoch: int) -> np.ndarray:
    if self._perm[0] != epoch:
      rng = np.random.default_rng([self.seed, epoch])
      self._perm = (epoch, rng.permutation(self.columns.num_rows))
    return self._perm[1]

  def __call__(self, step: int, _=None) -> dict:
    epoch, within = divmod(int(step), self.steps)
    lo = within * self.global_batch_size + (
        self.process_index * self.local_batch_size)
    idx = self.permutation(epoch)[lo:lo + self.local_batch_size]
    batch = self.columns.gather(idx)
    if self.transform is not None:
      # The rows' positions in `columns`: unique even when splits are
      # concatenated (their row_ids restart at 0).
      batch = self.transform(batch, seed=self.seed, epoch=epoch, index=idx)
    return batch


def train_iterator(columns: Mapping[str, np.ndarray], *,
                   global_batch_size: int, seed: int,
                   transform: Callable[..., dict] | None = None,
                   num_epochs: int | None = None,
                   process_index: int | None = None,
                   process_count: int | None = None, worker_count: int = 0,
                   worker_buffer_size: int = 2, prefetch_buffer_size: int = 4):
  """A checkpointable iterator of per-process training batches.

  Args:
    columns: split columns (``label``, ``row_id`` and the task's: ids,
      input_ids ...), numeric arrays of equal length.
    global_batch_size: batch size over all processes.
    seed: data-order seed (also given to ``transform``).
    transform: the task's host-side ``fn(batch, *, seed, epoch, index) ->
      batch`` (FLIP's masks), keyed by the rows' positions ``index`` in
      ``columns``; picklable when ``worker_count`` > 0. None = identity.
    num_epochs: epochs to yield; None = forever.
    process_index, process_count: default jax.process_index()/count().
    worker_count: grain worker processes (0 = in this process).
    worker_buffer_size: batches buffered per worker.
    prefetch_buffer_size: batches prefetched by a thread without workers.

  Returns:
    A grain DatasetIterator: next() -> batch dict; get_state()/set_state().
    Call `.close()` when done to stop worker processes cleanly.
  """
  process_index, process_count = _process(process_index, process_count)
  local = _local_batch(global_batch_size, process_count)
  cols = _Columns(columns)
  steps = steps_per_epoch(cols.num_rows, global_batch_size)
  if steps == 0:
    raise ValueError(f"{cols.num_rows} rows give no full batch of "
                     f"{global_batch_size}")
  fn = _TrainBatch(cols, global_batch_size=global_batch_size,
                   local_batch_size=local, process_index=process_index,
                   seed=seed, transform=transform)
  ds = grain.MapDataset.range(steps).repeat(num_epochs)
  ds = ds.map_with_index(fn)  # index = global step
  if worker_count > 0:
    from absl import flags  # pylint: disable=g-import-not-at-top
    if not flags.FLAGS.is_parsed():
      # grain's worker processes read absl flags; outside an absl main
      # (tests, notebooks) use their defaults.
      flags.FLAGS.mark_as_parsed()
    ids = ds.to_iter_dataset(grain.ReadOptions(num_threads=0,
                                               prefetch_buffer_size=0))
    ids = ids.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=worker_count, per_worker_buffer_size=worker_buffer_size))
  else:
    ids = ds.to_iter_dataset(grain.ReadOptions(
        num_threads=1 if prefetch_buffer_size else 0,
        prefetch_buffer_size=prefetch_buffer_size))
  return iter(ids)


def eval_batches(columns: Mapping[str, np.ndarray], *,
                 global_batch_size: int, process_index: int | None = None,
                 process_count: int | None = None,
                 transform=None) -> Iterator[dict]:
  """All rows in order, padded with weight 0 / row_id -1 (see module doc).

  Args:
    columns: split columns as for train_iterator.
    global_batch_size: batch size over all processes.
    process_index, process_count: default jax's.
    transform: None or ``fn(batch, *, seed=None, epoch=None, index)``
      applied to each batch (``index``: the rows' positions, padding
      repeating row 0), as ``TaskData.eval_transform``.

  Yields:
    Per-process batch dicts of exactly global_batch_size // process_count
    rows.
  """
  process_index, process_count = _process(process_index, process_count)
  local = _local_batch(global_batch_size, process_count)
  cols = _Columns(columns)
  n = cols.num_rows
  num_batches = -(-n // global_batch_size)
  for b in range(num_batches):
    lo = b * global_batch_size + process_index * local
    idx = np.arange(lo, min(lo + local, n))
    real = len(idx)
    # Padding repeats row 0 (a well-formed input, e.g. a non-empty attention
    # mask) and is marked by weight 0 and row_id -1.
    rows = np.concatenate([idx, np.zeros(local - real, int)])
    batch = cols.gather(rows)
    if transform is not None:
      batch = transform(batch, seed=None, epoch=None, index=rows)
    batch["weight"][real:] = 0.0
    batch["row_id"][real:] = -1
    yield batch


def concat_columns(*parts: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The columns every part has, concatenated; ``row_id`` renumbered."""
  keys = [k for k in parts[0] if all(k in p for p in parts)]
  out = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in keys}
  if "row_id" in out:
    out["row_id"] = np.arange(len(out["row_id"]), dtype=np.int32)
  return out


def array_columns(cols: Mapping[str, Any],
                  keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
  """The numeric columns the pipeline batches (drops raw text).

  With ``keys``, only those (and the required ``label`` / ``row_id``).
  """
  out = {k: v for k, v in cols.items()
         if isinstance(v, np.ndarray) and v.dtype.kind in "iufb"}
  if keys is not None:
    want = set(keys) | set(REQUIRED_COLUMNS)
    out = {k: v for k, v in out.items() if k in want}
  return out


def with_user_group(cols: Mapping[str, np.ndarray], field_names,
                    field: str = "user_id") -> dict[str, np.ndarray]:
  """Adds ``group``: the row's id in the ``field`` column of ``ids`` (the
  user, for user-grouped AUC); unchanged where there is no such field."""
  out = dict(cols)
  names = list(field_names)
  if "ids" in out and field in names:
    out["group"] = np.asarray(out["ids"][:, names.index(field)], np.int32)
  return out


def ctr_split_columns(cols: Mapping[str, Any], field_names,
                      keys: tuple[str, ...]) -> dict[str, np.ndarray]:
  """A CTR task's split: its ``keys`` columns, ``label``, ``row_id`` and the
  user ``group`` (for gAUC), the rest dropped."""
  return array_columns(with_user_group(cols, field_names),
                       tuple(keys) + ("group",))
