"""SRP4CTR's data: the sequence store of a run, its columns and host masks.

Both tasks read the prepared data of ``config.data`` (FLIP's split and
vocabularies) and the behaviour-sequence store built on it
(`flip_jax.data.sequences`, section ``config.sequence``).

* CTR columns (every split): ``ids``, ``label``, ``row_id``, ``hist_begin``,
  ``hist_end``, ``target``; the task's batch and evaluation transforms
  gather ``hist`` / ``hist_mask`` per batch (`sequences.WindowTransform`).
* Pretraining columns: one row per pretraining window of the *train* events
  (``sequence.pretrain_stride``, ``sequence.min_events``); the transform
  gathers the window and masks it (``mask_windows``).

Masking (B7.2, [assumed] BERT4Rec style): per window
m = max(1, round(mask_prob * n)) of its n real events, chosen uniformly by
a pure function of (seed, epoch, row position), capped at
M = max(1, round(mask_prob * L)); every attribute of a masked event becomes
MASK; the labels are the original attribute ids.
"""
from __future__ import annotations

import numpy as np

from flip_jax import noise
from flip_jax.data import masking
from flip_jax.data import pipeline
from flip_jax.data import prepare
from flip_jax.data import sequences
from flip_jax.methods.srp4ctr import fgbert
from flip_jax.methods.srp4ctr import layers
from flip_jax.train import runtime

_STREAM = 4101  # masking.uniform stream of the sequence masks
CTR_COLUMNS = ("ids", "label", "row_id", "hist_begin", "hist_end", "target")


def load_store(config, workdir: str):
  """(prepared data, sequence store) of a run (each built once, cached)."""
  s = config.sequence
  spec = sequences.SequenceSpec(s.user_field, s.item_field,
                                tuple(s.attributes))

  def build():
    prepared = prepare.load_dataset(
        config.data, prepare.default_cache_root(config.data, workdir))
    return prepared, sequences.load_or_build(prepared, spec)
  return runtime.main_process_first(build, "sequences")


def block_config(model_cfg) -> layers.BlockConfig:
  s = model_cfg.seq
  return layers.BlockConfig(
      hidden=s.hidden, heads=s.heads, mlp=s.mlp, dropout=s.dropout,
      attention_dropout=s.attention_dropout, act=s.act,
      init_std=s.init_std, dtype=model_cfg.dtype)


def seq_config(config, store: sequences.SequenceStore) -> fgbert.SeqConfig:
  """``model.seq`` + the store's attributes -> the frozen encoder config."""
  return fgbert.SeqConfig(
      block=block_config(config.model), num_layers=config.model.seq.layers,
      attributes=store.attributes,
      vocab_sizes=tuple(int(v) for v in store.vocab_sizes),
      item_attributes=store.item_attributes,
      max_length=config.sequence.max_length)


def ctr_columns(prepared, store, split: str) -> dict:
  """A split's CTR columns (+ ``group``, the user id feature, for gAUC as
  every task has it)."""
  cols = pipeline.with_user_group(
      {k: prepared.splits[split][k] for k in ("ids", "label", "row_id")},
      prepared.feature_map.field_names)
  cols.update(store.splits[split])
  return cols


def pretrain_columns(config, store) -> dict:
  """One row per pretraining window (train events only)."""
  s = config.sequence
  begin, end = store.pretrain_windows(s.max_length, s.pretrain_stride,
                                      s.min_events)
  n = len(begin)
  return {"hist_begin": begin, "hist_end": end,
          "label": np.zeros(n, np.float32),
          "row_id": np.arange(n, dtype=np.int32)}


def max_masked(mask_prob: float, length: int) -> int:
  """M: masked slots per window (static shape)."""
  return max(1, int(round(mask_prob * length)))


def mask_windows(hist, hist_mask, *, mask_prob: float, seed: int,
                 epoch: int, index) -> dict:
  """BERT4Rec-style masks of a batch of windows (module docstring).

  Args:
    hist: int [B, L, A]; hist_mask int [B, L].
    mask_prob: fraction of a window's events masked.
    seed, epoch, index: the randomness key (index [B]: row positions).

  Returns:
    {mlm_hist [B, L, A], mlm_positions [B, M], mlm_labels [B, M, A],
     mlm_weight float32 [B, M]} (positions of padding slots point at 0).
  """
  hist = np.asarray(hist, np.int32)
  valid = np.asarray(hist_mask) > 0
  b, length, _ = hist.shape
  m_max = max_masked(mask_prob, length)
  n = valid.sum(1)
  m = np.where(n > 0, np.maximum(1, np.rint(mask_prob * n)), 0)
  m = np.minimum(m, m_max).astype(np.int64)
  key = np.where(valid, masking.uniform(seed, epoch, index, _STREAM, length),
                 2.0)
  order = np.argsort(key, axis=1, kind="stable")[:, :m_max]
  slot = np.arange(m_max)[None] < m[:, None]
  positions = np.where(slot, order, 0).astype(np.int32)
  rows = np.arange(b)[:, None]
  labels = np.where(slot[..., None], hist[rows, positions], 0)
  mlm = hist.copy()
  hit = np.zeros((b, length), bool)
  hit[np.broadcast_to(rows, positions.shape)[slot], positions[slot]] = True
  mlm[hit] = sequences.MASK
  return {"mlm_hist": mlm, "mlm_positions": positions,
          "mlm_labels": labels.astype(np.int32),
          "mlm_weight": slot.astype(np.float32)}


class PretrainTransform:
  """Gathers the windows and masks them (the pipeline transform)."""

  def __init__(self, tokens, length: int, mask_prob: float):
    self.windows = sequences.WindowTransform(tokens, length)
    self.mask_prob = mask_prob

  def __call__(self, batch, *, seed, epoch, index):
    batch = self.windows(batch)
    batch.update(mask_windows(batch["hist"], batch["hist_mask"],
                              mask_prob=self.mask_prob, seed=seed,
                              epoch=epoch, index=index))
    return batch


def item_log_q(store) -> np.ndarray:
  """log q of the item noise: train-event item counts (0 -> -inf)."""
  return np.asarray(noise.noise_log_probs(store.train_counts(0)), np.float32)
