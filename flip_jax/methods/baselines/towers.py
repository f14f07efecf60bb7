"""CTR-BERT's two texts, cut from the prompt every row already has.

The official CTR-BERT reads ``user_text.txt`` and ``item_text.txt`` (FLIP.md
2.1): the user's clauses and the item's clauses of the row's prompt, each
tokenized on its own with the tokenizer's specials ([CLS] ... [SEP]). Here
the prompt of ``flip_jax.data.textify`` ("User ID is 4. Gender is female.
... Film genre is Comedy.") is cut at its clause boundaries (known from the
value spans: clause f ends with the '.' right after its value) into the
user text (the clauses of ``user_fields``, in field order) and the item
text (every other clause), which are tokenized by the project's tokenizer
path (``tokenize.tokenize_texts``).

The towers' tokens are exactly the prompt's tokens of their fields'
clauses: the prompt is tokenized clause by clause (both WordPiece and
byte-level BPE split at the clause boundaries), so every value keeps its
token ids, and each tower starts at position 0 with its own [CLS], as the
official separate texts do. A tower is about half the prompt, so both
towers together cost about what one pass over the prompt costs (masking
the full prompt twice would cost two full passes, and would put the item's
tokens at positions 20-60 instead of 1-40).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from flip_jax.data import books
from flip_jax.data import movielens
from flip_jax.data import tokenize as tokenize_lib

# Per-tower token columns (``user_`` / ``item_`` + these).
TOKEN_KEYS = ("input_ids", "attention_mask")
SIDES = ("user", "item")


def known_fields(data_cfg) -> tuple[str, ...] | None:
  """The field names ``data_cfg`` will give, where known before loading.

  MovieLens (and the synthetic data), BookCrossing, GoodReads (all its
  fields; a release may lack some) and a CSV source with its fields
  listed; None for a CSV source that reads them from the file.
  """
  name = data_cfg.dataset
  if name in ("synthetic", "ml-1m", "ml-100k"):
    return tuple(movielens.FIELD_NAMES)
  if name == "bookcrossing":
    return tuple(books.BX_FIELDS)
  if name == "goodreads":
    return tuple(f[0] for f in books.GR_FIELDS)
  if name == "csv" and len(data_cfg.csv.fields):
    return tuple(data_cfg.csv.fields)
  return None


def side_fields(field_names: Sequence[str], user_fields: Sequence[str]
                ) -> dict[str, tuple[int, ...]]:
  """{'user': field indices, 'item': the other fields' indices}.

  Raises:
    ValueError: a user field the data lacks, or a side with no field.
  """
  names = list(field_names)
  unknown = [f for f in user_fields if f not in names]
  if unknown:
    raise ValueError(f"ctr_bert.user_fields: {unknown} not fields of this "
                     f"data; its fields are {names}")
  user = tuple(i for i, n in enumerate(names) if n in set(user_fields))
  item = tuple(i for i in range(len(names)) if i not in user)
  if not user or not item:
    raise ValueError(f"ctr_bert.user_fields={list(user_fields)} leaves the "
                     f"{'user' if not user else 'item'} tower without a field "
                     f"(fields: {names})")
  return {"user": user, "item": item}


def clause_bounds(texts, spans) -> np.ndarray:
  """[n, F, 2] character [start, end) of every clause ("<Field> is <v>.").

  Clause f starts 2 characters ('. ') after the value of f-1 ends and ends
  1 character ('.') after its own value.

  Raises:
    ValueError: a text that is not the clause template.
  """
  spans = np.asarray(spans, np.int64)
  n, num_fields = spans.shape[:2]
  bounds = np.zeros((n, num_fields, 2), np.int64)
  bounds[:, 1:, 0] = spans[:, :-1, 1] + 2
  bounds[:, :, 1] = spans[:, :, 1] + 1
  for r in range(min(n, 64)):  # the template, on a sample of rows
    t = texts[r]
    ends = [t[e - 1:e] for e in bounds[r, :, 1]]
    gaps = [t[s - 2:s] for s in bounds[r, 1:, 0]]
    if ends != ["."] * num_fields or gaps != [". "] * (num_fields - 1):
      raise ValueError(f"row {r}: {t!r} is not '<Field> is <value>.' "
                       "clauses joined by spaces")
  return bounds


def side_texts(texts, spans, fields: Sequence[int]
               ) -> tuple[list[str], np.ndarray]:
  """The clauses of ``fields`` of every row, joined by single spaces.

  Args:
    texts: [n] prompts (``textify`` template).
    spans: int [n, F, 2] value spans in the prompts.
    fields: field indices, ascending.

  Returns:
    (texts [n] str, spans int32 [n, len(fields), 2] of the values in them).
  """
  texts = list(texts)
  spans = np.asarray(spans, np.int64)
  bounds = clause_bounds(texts, spans)
  fields = list(fields)
  starts, ends = bounds[:, fields, 0], bounds[:, fields, 1]
  lengths = ends - starts
  # Offset of each kept clause in the side text: the clauses before it and
  # one space after each.
  offset = np.concatenate([np.zeros((len(texts), 1), np.int64),
                           np.cumsum(lengths + 1, axis=1)[:, :-1]], axis=1)
  out_spans = spans[:, fields] - starts[..., None] + offset[..., None]
  cols = [[t[a:b] for t, a, b in zip(texts, starts[:, j].tolist(),
                                     ends[:, j].tolist())]
          for j in range(len(fields))]
  out = [" ".join(parts) for parts in zip(*cols)]
  return out, out_spans.astype(np.int32)


def tower_columns(tokenizer, texts, spans, fields_by_side, max_length: int
                  ) -> tuple[dict[str, np.ndarray], dict]:
  """Token columns of both towers for one split.

  Returns:
    (columns, stats). columns: ``<side>_input_ids`` int32 [n, max_length],
    ``<side>_attention_mask`` int8 and ``<side>_token_field`` (the field's
    position among the side's fields, -1 on template words, specials and
    padding) for side in ('user', 'item'); stats: per side, the
    tokenisation stats of ``tokenize_texts``.
  """
  cols, stats = {}, {}
  for side in SIDES:
    t, s = side_texts(texts, spans, fields_by_side[side])
    tok, st = tokenize_lib.tokenize_texts(tokenizer, t, s, max_length)
    for k, v in tok.items():
      cols[f"{side}_{k}"] = v
    stats[side] = st
  return cols, stats


def cut_to_longest(splits: dict[str, dict[str, np.ndarray]]
                   ) -> dict[str, dict[str, np.ndarray]]:
  """Each tower's columns cut to its longest row over all splits.

  One width per tower in every split (one compiled shape); nothing real is
  cut, padding only.
  """
  out = {name: dict(cols) for name, cols in splits.items()}
  for side in SIDES:
    mask = f"{side}_attention_mask"
    longest = max(int(np.asarray(c[mask]).sum(axis=1).max())
                  for c in splits.values() if len(c[mask]))
    for cols in out.values():
      for key in (f"{side}_{k}" for k in TOKEN_KEYS + ("token_field",)):
        cols[key] = np.ascontiguousarray(cols[key][:, :longest])
  return out
