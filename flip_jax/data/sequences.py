"""Behaviour sequences over the prepared data (SRP4CTR, spec B6 / B7).

Events are every rating of the prepared data (`prepare.load_dataset`): the
train, valid and test splits concatenated, i.e. the one global time order
with FLIP's 80/10/10 split and vocabularies, so SRP4CTR's tables compare with
FLIP's and ClickPrompt's. Each event is a token of attribute ids:

  item          the item field's local id (feature map: 0 OOV, 1 MASK, 2..)
  <field>       any feature-map field's local id (e.g. 'genre')
  year:<field>  the '(YYYY)' suffix of that field's value (MovieLens titles):
                0 unknown / OOV, 1 MASK, 2.. the sorted years
  feedback      the event's label: 2 negative, 3 positive (1 MASK); history
                only, never part of a target (it *is* the target's label)

Layout (memory-light, cached beside the prepared data): the events grouped by
user, time-sorted within a user, as one ``tokens`` [E, A] array plus
``user_offsets`` [U + 1]; per sample only ``hist_begin`` / ``hist_end``
(positions into ``tokens``). A window of length L is gathered per batch
(``gather_windows``: left-padded, ``hist_mask`` 1 on real events, oldest
first, the newest at position L - 1).

Tie rule (no leakage): a sample's history is the user's events with a
timestamp *strictly before* the sample's. Events sharing the target's
timestamp (the target itself included) are all left out, whatever their
file order: same-second ratings count as simultaneous.

Users are identified by their raw key (read back from the rendered text),
not by the feature id, so users unseen in train + valid (one OOV id) keep
their own histories.
"""
from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

from flip_jax.data import cache
from flip_jax.data import features
from flip_jax.data import rawio

SEQ_VERSION = 1
SPLITS = ("train", "valid", "test")
MASK = features.MASK
FEEDBACK_NEG, FEEDBACK_POS = 2, 3
_YEAR = re.compile(r"\((\d{4})\)\s*$")
_SPLIT_COLUMNS = ("hist_begin", "hist_end", "target")
# The item field of a dataset (default 'movie_id', the MovieLens one).
ITEM_FIELDS = {"goodreads": "book_id"}
TIE_RULE = ("history = the user's events with timestamp < the sample's "
            "(same-timestamp events, the target included, are excluded)")


@dataclasses.dataclass(frozen=True)
class SequenceSpec:
  """What a token holds (``config.sequence``, frozen).

  Attributes:
    user_field: feature-map field naming the user.
    item_field: feature-map field naming the item ('item' attribute).
    attributes: token attributes (module docstring), 'item' first.
  """
  user_field: str
  item_field: str
  attributes: tuple[str, ...]

  def __post_init__(self):
    object.__setattr__(self, "attributes", tuple(self.attributes))
    if not self.attributes or self.attributes[0] != "item":
      raise ValueError(f"sequence.attributes {self.attributes}: 'item' must "
                       "come first")
    if len(set(self.attributes)) != len(self.attributes):
      raise ValueError(f"sequence.attributes {self.attributes}: duplicates")

  @property
  def item_attributes(self) -> tuple[int, ...]:
    """Indices of the attributes describing the item (not 'feedback')."""
    return tuple(i for i, a in enumerate(self.attributes) if a != "feedback")


def field_index(fm, name: str) -> int:
  if name not in fm.field_names:
    raise ValueError(f"sequence: field {name!r} not in the feature map "
                     f"{list(fm.field_names)}")
  return fm.field_names.index(name)


def year_table(values) -> tuple[np.ndarray, np.ndarray]:
  """(local id -> year id [2 + V], sorted years) of a field's vocabulary."""
  years = np.array([int(m.group(1)) if (m := _YEAR.search(str(v))) else -1
                    for v in values], np.int64)
  uniq = np.unique(years[years >= 0])
  table = np.zeros(len(values) + features.NUM_RESERVED, np.int32)
  table[features.NUM_RESERVED:] = np.where(
      years >= 0, np.searchsorted(uniq, years) + features.NUM_RESERVED, 0)
  return table, uniq


def attribute_vocab(fm, spec: SequenceSpec) -> tuple[list, np.ndarray]:
  """Per attribute: (how to compute it, vocabulary size incl. reserved)."""
  rules, sizes = [], []
  for name in spec.attributes:
    if name == "feedback":
      rules.append(("feedback", None))
      sizes.append(FEEDBACK_POS + 1)
      continue
    if name.startswith("year:"):
      f = field_index(fm, name.split(":", 1)[1])
      table, uniq = year_table(fm.vocabs[f])
      rules.append(("year", (f, table)))
      sizes.append(len(uniq) + features.NUM_RESERVED)
      continue
    f = field_index(fm, spec.item_field if name == "item" else name)
    rules.append(("field", f))
    sizes.append(int(fm.vocab_sizes[f]))
  return rules, np.asarray(sizes, np.int64)


def row_tokens(ids: np.ndarray, label: np.ndarray, fm, spec: SequenceSpec
               ) -> np.ndarray:
  """Attribute ids of rows: int32 [n, A] (see the module docstring)."""
  rules, _ = attribute_vocab(fm, spec)
  out = np.zeros((len(ids), len(rules)), np.int32)
  for a, (kind, arg) in enumerate(rules):
    if kind == "feedback":
      out[:, a] = np.where(np.asarray(label) > 0.5, FEEDBACK_POS,
                           FEEDBACK_NEG)
    elif kind == "year":
      f, table = arg
      out[:, a] = table[ids[:, f] - fm.offsets[f]]
    else:
      out[:, a] = ids[:, arg] - fm.offsets[arg]
  return out


def field_values(cols, f: int) -> np.ndarray:
  """The raw values of field ``f`` read back from the rendered text."""
  text, spans = cols["text"], np.asarray(cols["spans"])
  out = np.empty(len(text), dtype=object)
  out[:] = [t[s:e] for t, (s, e) in zip(text, spans[:, f].tolist())]
  return out


def user_keys(prepared, spec: SequenceSpec) -> np.ndarray:
  """Raw user keys of every row (splits concatenated), checked vs the map."""
  fm = prepared.feature_map
  f = field_index(fm, spec.user_field)
  keys = np.concatenate([field_values(prepared.splits[s], f)
                         for s in SPLITS if s in prepared.splits])
  ids = np.concatenate([prepared.splits[s]["ids"][:, f]
                        for s in SPLITS if s in prepared.splits])
  local = ids - fm.offsets[f]
  known = local >= features.NUM_RESERVED
  vocab = np.asarray(fm.vocabs[f], dtype=object)
  expect = vocab[local[known] - features.NUM_RESERVED]
  if not np.array_equal(expect.astype(str), keys[known].astype(str)):
    raise rawio.DataError(f"{prepared.stats['dataset']}: the displayed "
                          f"{spec.user_field} differs from its key; sequences "
                          "need the raw user key in the text")
  return keys


@dataclasses.dataclass
class SequenceStore:
  """Per-user, time-sorted event tokens and every sample's window bounds.

  Attributes:
    attributes: token attribute names; vocab_sizes int64 [A].
    item_attributes: indices of the attributes a target has.
    user_offsets: int64 [U + 1]; user u's events are [off[u], off[u + 1]).
    user_train_end: int64 [U]; end of each user's train events (a prefix).
    tokens: int32 [E, A]; timestamp int64 [E]; event_row int64 [E] (row in
      the concatenated splits).
    splits: name -> {hist_begin, hist_end int64 [n], target int32 [n, A_i]}.
  """
  attributes: tuple[str, ...]
  vocab_sizes: np.ndarray
  item_attributes: tuple[int, ...]
  user_offsets: np.ndarray
  user_train_end: np.ndarray
  tokens: np.ndarray
  timestamp: np.ndarray
  event_row: np.ndarray
  splits: dict

  @property
  def num_users(self) -> int:
    return len(self.user_offsets) - 1

  def train_counts(self, a: int) -> np.ndarray:
    """Occurrences of attribute ``a``'s ids over the train events [V_a]."""
    off = self.user_offsets[:-1]
    n = self.user_train_end - off
    pos = np.repeat(off, n) + ranges(n)
    return np.bincount(self.tokens[pos, a], minlength=int(
        self.vocab_sizes[a])).astype(np.int64)

  def pretrain_windows(self, length: int, stride: int, min_events: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(begin, end) of the pretraining windows: train events only.

    Per user, windows end at its last train event and every ``stride``
    events before it; a window keeps the last ``length`` events before its
    end and needs at least ``min_events`` of them.
    """
    begins, ends = [], []
    off = self.user_offsets[:-1]
    k = 0
    while True:
      end = self.user_train_end - k * stride
      ok = end - off >= min_events
      if not ok.any():
        break
      begins.append(off[ok])
      ends.append(end[ok])
      k += 1
    if not begins:
      raise rawio.DataError(f"no user has {min_events} train events")
    return np.concatenate(begins), np.concatenate(ends)


def ranges(n: np.ndarray) -> np.ndarray:
  """concat(arange(k) for k in n)."""
  n = np.asarray(n, np.int64)
  return np.arange(int(n.sum()), dtype=np.int64) - np.repeat(
      np.cumsum(n) - n, n)


def build_store(prepared, spec: SequenceSpec) -> SequenceStore:
  """Builds the store from prepared data (module docstring)."""
  fm = prepared.feature_map
  names = [s for s in SPLITS if s in prepared.splits]
  sizes = [len(prepared.splits[s]["label"]) for s in names]
  ids = np.concatenate([prepared.splits[s]["ids"] for s in names])
  label = np.concatenate([prepared.splits[s]["label"] for s in names])
  ts = np.concatenate([prepared.splits[s]["timestamp"] for s in names]
                      ).astype(np.int64)
  if (ts < 0).any():
    raise rawio.DataError(f"{prepared.stats['dataset']}: no timestamps; "
                          "behaviour sequences need them")
  _, user = np.unique(user_keys(prepared, spec), return_inverse=True)
  user = user.reshape(-1).astype(np.int64)
  n = len(user)
  order = np.lexsort((np.arange(n), ts, user))   # user, time, row
  pos = np.empty(n, np.int64)
  pos[order] = np.arange(n)
  u_sorted, t_sorted = user[order], ts[order]
  new = np.ones(n, bool)
  new[1:] = (u_sorted[1:] != u_sorted[:-1]) | (t_sorted[1:] != t_sorted[:-1])
  # First event of each (user, timestamp) group: the strict-before end.
  group_start = np.maximum.accumulate(np.where(new, np.arange(n), 0))
  counts = np.bincount(user)
  offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
  n_train = sizes[0]
  train_end = offsets[:-1] + np.bincount(user[:n_train],
                                         minlength=len(counts))
  tokens = row_tokens(ids, label, fm, spec)
  _, vocab = attribute_vocab(fm, spec)
  item_attrs = spec.item_attributes
  splits, lo = {}, 0
  for name, size in zip(names, sizes):
    sl = slice(lo, lo + size)
    splits[name] = {"hist_begin": offsets[user[sl]],
                    "hist_end": group_start[pos[sl]].astype(np.int64),
                    "target": tokens[sl][:, item_attrs]}
    lo += size
  return SequenceStore(
      attributes=spec.attributes, vocab_sizes=vocab,
      item_attributes=item_attrs, user_offsets=offsets,
      user_train_end=train_end.astype(np.int64), tokens=tokens[order],
      timestamp=t_sorted, event_row=order.astype(np.int64), splits=splits)


_STORE_ARRAYS = ("vocab_sizes", "user_offsets", "user_train_end", "tokens",
                 "timestamp", "event_row")


def load_or_build(prepared, spec: SequenceSpec) -> SequenceStore:
  """The store of ``prepared`` (cached in its cache entry, built once)."""
  key = cache.fingerprint([], {"spec": dataclasses.asdict(spec),
                               "v": SEQ_VERSION})
  path = os.path.join(prepared.cache_dir, f"seq-{key}")
  if not cache.usable(path):
    store = build_store(prepared, spec)
    with cache.atomic_dir(path) as tmp:
      for k in _STORE_ARRAYS:
        np.save(os.path.join(tmp, f"{k}.npy"), getattr(store, k))
      for s, cols in store.splits.items():
        for k, v in cols.items():
          np.save(os.path.join(tmp, f"{s}.{k}.npy"), v)
      cache.write_json(os.path.join(tmp, "manifest.json"), {
          "spec": dataclasses.asdict(spec), "splits": list(store.splits),
          "item_attributes": list(store.item_attributes),
          "tie_rule": TIE_RULE, "events": int(len(store.tokens)),
          "users": store.num_users})
  meta = cache.read_json(os.path.join(path, "manifest.json"))
  arrays = {k: np.load(os.path.join(path, f"{k}.npy")) for k in _STORE_ARRAYS}
  splits = {s: {k: np.load(os.path.join(path, f"{s}.{k}.npy"))
                for k in _SPLIT_COLUMNS} for s in meta["splits"]}
  return SequenceStore(attributes=tuple(meta["spec"]["attributes"]),
                       item_attributes=tuple(meta["item_attributes"]),
                       splits=splits, **arrays)


# ----------------------------------------------------------- windows
def gather_windows(tokens: np.ndarray, begin, end, length: int
                   ) -> tuple[np.ndarray, np.ndarray]:
  """Left-padded windows of the last ``length`` events before ``end``.

  Args:
    tokens: int [E, A] event tokens.
    begin, end: int [B]: the user's first event and the (exclusive) end.
    length: L.

  Returns:
    (hist int32 [B, L, A] (0 at padding), hist_mask int32 [B, L]).
  """
  begin = np.asarray(begin, np.int64)
  end = np.asarray(end, np.int64)
  pos = end[:, None] - length + np.arange(length, dtype=np.int64)[None]
  mask = pos >= np.maximum(begin, end - length)[:, None]
  hist = np.asarray(tokens)[np.where(mask, pos, 0)]
  hist = np.where(mask[..., None], hist, 0).astype(np.int32)
  return hist, mask.astype(np.int32)


class WindowTransform:
  """Pipeline transform: adds ``hist`` / ``hist_mask`` (picklable)."""

  def __init__(self, tokens: np.ndarray, length: int):
    self.tokens, self.length = tokens, length

  def __call__(self, batch, *, seed=None, epoch=None, index=None):
    del seed, epoch, index
    batch["hist"], batch["hist_mask"] = gather_windows(
        self.tokens, batch["hist_begin"], batch["hist_end"], self.length)
    return batch
