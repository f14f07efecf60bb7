"""Rows -> template text plus the character span of every field value.

Template (FLIP.md 2.6): one clause "<Field> is <value>." per field, in field
order, joined by single spaces. The text carries no markers; `spans[f]` is
the [start, end) character range of field f's value. Whitespace inside a
value (tabs, newlines, runs of spaces) is collapsed to one space so the text
is one line.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from flip_jax.data import rawparse

CLAUSE = "{name} is {value}."


def clean_value(value: str) -> str:
  """Collapses whitespace; an empty value becomes 'unknown'."""
  return " ".join(str(value).split()) or "unknown"


def render_row(display_names: Sequence[str], values: Sequence[str]
               ) -> tuple[str, np.ndarray]:
  """Renders one row.

  Args:
    display_names: clause names, one per field.
    values: display values, one per field.

  Returns:
    (text, spans int32 [F, 2]).
  """
  parts, spans, pos = [], [], 0
  for name, value in zip(display_names, values):
    value = clean_value(value)
    start = pos + len(name) + len(" is ")
    spans.append((start, start + len(value)))
    clause = CLAUSE.format(name=name, value=value)
    parts.append(clause)
    pos += len(clause) + 1
  return " ".join(parts), np.asarray(spans, np.int32).reshape(-1, 2)


def render(display_names: Sequence[str], values: Sequence[np.ndarray]
           ) -> tuple[np.ndarray, np.ndarray]:
  """Renders many rows (vectorised over the distinct values of each field).

  Args:
    display_names: clause names, one per field.
    values: per field, an array [n] of display strings.

  Returns:
    (text: object array [n] of str, spans: int32 [n, F, 2]).
  """
  num_fields = len(display_names)
  if len(values) != num_fields:
    raise ValueError(f"render: {len(values)} value columns for {num_fields} "
                     "fields")
  n = len(values[0]) if num_fields else 0
  clause_cols, clause_len, value_len = [], [], []
  for name, col in zip(display_names, values):
    uniq, inv = rawparse.factorize(col)
    cleaned = [clean_value(u) for u in uniq]
    clauses = np.empty(len(cleaned), dtype=object)
    clauses[:] = [CLAUSE.format(name=name, value=v) for v in cleaned]
    clause_cols.append(clauses[inv])
    clause_len.append(np.array([len(c) for c in clauses], np.int64)[inv])
    value_len.append(np.array([len(v) for v in cleaned], np.int64)[inv])
  spans = np.zeros((n, num_fields, 2), np.int32)
  pos = np.zeros(n, np.int64)
  for f, name in enumerate(display_names):
    start = pos + len(name) + len(" is ")
    spans[:, f, 0] = start
    spans[:, f, 1] = start + value_len[f]
    pos = pos + clause_len[f] + 1
  text = np.empty(n, dtype=object)
  text[:] = [" ".join(parts) for parts in zip(*clause_cols)]
  return text, spans


def highlight(text: str, spans: np.ndarray, open_mark: str = "[",
              close_mark: str = "]") -> str:
  """The text with every value span wrapped in brackets (for display)."""
  out, last = [], 0
  for start, end in np.asarray(spans).tolist():
    out += [text[last:start], open_mark, text[start:end], close_mark]
    last = end
  out.append(text[last:])
  return "".join(out)
