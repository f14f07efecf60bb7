"""Raw-file helpers shared by the dataset readers.

A reader turns a dataset's raw files into a `RawTable`: one string key column
per field (the ID view), one display string column per field (the text view,
codes decoded into words), the rating and, where the dataset has one, a
timestamp. Everything after that (labels, splits, vocabularies, text) is
dataset independent.
"""
from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import os
from typing import Callable, Iterator, Sequence

import numpy as np


class DataError(ValueError):
  """Bad or missing raw data; the message names the file (and line)."""


@dataclasses.dataclass
class RawTable:
  """A dataset after parsing, before labels and splits.

  Attributes:
    name: dataset key.
    field_names: internal field names, in the dataset's field order.
    display_names: clause names used in the text template.
    keys: per field, an object array [n] of strings: the categorical value
      that becomes a feature id.
    values: per field, an object array [n] of strings shown in the text.
    rating: float64 [n], the raw rating (or an already-binary label).
    timestamp: int64 [n] or None when the dataset has no time.
    info: free-form facts about parsing (skipped lines, dropped rows).
  """
  name: str
  field_names: tuple[str, ...]
  display_names: tuple[str, ...]
  keys: list[np.ndarray]
  values: list[np.ndarray]
  rating: np.ndarray
  timestamp: np.ndarray | None
  info: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    n = len(self.rating)
    if not (len(self.field_names) == len(self.display_names)
            == len(self.keys) == len(self.values)):
      raise ValueError(f"{self.name}: field lists differ in length")
    for name, k, v in zip(self.field_names, self.keys, self.values):
      if len(k) != n or len(v) != n:
        raise ValueError(f"{self.name}: column {name} has {len(k)}/{len(v)} "
                         f"rows, expected {n}")
    if self.timestamp is not None and len(self.timestamp) != n:
      raise ValueError(f"{self.name}: timestamp has {len(self.timestamp)} rows")

  @property
  def num_rows(self) -> int:
    return len(self.rating)

  def take(self, index: np.ndarray) -> "RawTable":
    """Row subset (or reordering) of every column."""
    return RawTable(
        name=self.name, field_names=self.field_names,
        display_names=self.display_names,
        keys=[k[index] for k in self.keys],
        values=[v[index] for v in self.values],
        rating=self.rating[index],
        timestamp=None if self.timestamp is None else self.timestamp[index],
        info=dict(self.info))


def find_file(data_dir: str, candidates: Sequence[str],
              prefix_glob: str | None = None) -> str:
  """Returns the first existing candidate (or a unique prefix match).

  Args:
    data_dir: directory holding the raw files.
    candidates: exact file names, in order of preference.
    prefix_glob: optional (prefix, suffixes) style pattern 'ratings*.dat'
      accepting e.g. 'ratings_users0001-2999.dat.gz'.

  Returns:
    The path of the file found.

  Raises:
    DataError: none (or several ambiguous) found; lists what was expected.
  """
  if not data_dir or not os.path.isdir(data_dir):
    raise DataError(f"data_dir {data_dir!r} is not a directory; expected it "
                    f"to contain {', '.join(candidates)}")
  for c in candidates:
    p = os.path.join(data_dir, c)
    if os.path.isfile(p):
      return p
  if prefix_glob:
    prefix, suffix = prefix_glob.split("*")
    found = sorted(
        f for f in os.listdir(data_dir)
        if f.startswith(prefix) and (f.endswith(suffix)
                                     or f.endswith(suffix + ".gz")))
    if len(found) == 1:
      return os.path.join(data_dir, found[0])
    if len(found) > 1:
      raise DataError(f"{data_dir}: several files match {prefix_glob}: "
                      f"{found}; keep one")
  present = sorted(os.listdir(data_dir))[:20]
  raise DataError(
      f"{data_dir}: missing {' or '.join(candidates)}"
      + (f" (or {prefix_glob}[.gz])" if prefix_glob else "")
      + f"; directory holds {present}")


def require_files(data_dir: str, names: Sequence[str]) -> list[str]:
  """Checks that every named file exists; one error lists all missing."""
  if not data_dir or not os.path.isdir(data_dir):
    raise DataError(f"data_dir {data_dir!r} is not a directory; expected "
                    f"files: {', '.join(names)}")
  missing = [n for n in names if not os.path.isfile(os.path.join(data_dir, n))]
  if missing:
    raise DataError(f"{data_dir}: missing {', '.join(missing)} (expected "
                    f"{', '.join(names)})")
  return [os.path.join(data_dir, n) for n in names]


def read_bytes(path: str) -> bytes:
  """Reads a file, gunzipping transparently (by magic bytes)."""
  with open(path, "rb") as f:
    data = f.read()
  if data[:2] == b"\x1f\x8b":
    data = gzip.decompress(data)
  return data


def open_text(path: str, encoding: str) -> io.TextIOBase:
  """Opens a text file, gzip or not, with the given encoding."""
  with open(path, "rb") as f:
    magic = f.read(2)
  if magic == b"\x1f\x8b":
    return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding,
                            newline="")
  return open(path, "r", encoding=encoding, newline="")


def split_lines(path: str, sep: str, num_fields: int,
                encoding: str = "latin-1") -> list[list[str]]:
  """Parses a strict `sep`-separated file; a bad line is an error.

  Args:
    path: file (gzip allowed).
    sep: field separator, e.g. '::' or '|'.
    num_fields: exact number of fields every non-empty line must have.
    encoding: text encoding.

  Returns:
    A list of rows (lists of strings).

  Raises:
    DataError: a line with the wrong number of fields, naming file and line.
  """
  text = read_bytes(path).decode(encoding)
  rows = []
  for lineno, line in enumerate(text.splitlines(), start=1):
    if not line.strip():
      continue
    parts = line.split(sep)
    if len(parts) != num_fields:
      raise DataError(f"{path}:{lineno}: expected {num_fields} fields "
                      f"separated by {sep!r}, got {len(parts)}: {line[:80]!r}")
    rows.append(parts)
  if not rows:
    raise DataError(f"{path}: file is empty")
  return rows


def parse_ints(path: str, rows: list[list[str]], col: int,
               what: str) -> np.ndarray:
  """Column `col` of parsed rows as int64; a bad value names its line."""
  try:
    return np.array([r[col] for r in rows], dtype=np.int64)
  except ValueError:
    for i, r in enumerate(rows, start=1):
      try:
        int(r[col])
      except ValueError:
        raise DataError(f"{path}: data row {i}: {what} {r[col]!r} is not an "
                        "integer") from None
    raise


def numeric_table(path: str, sep: str, num_fields: int,
                  encoding: str = "latin-1") -> np.ndarray:
  """Fast parse of an all-integer `sep`-separated file to int64 [n, k].

  Used for the large ratings files; a malformed line is an error naming the
  file and line number.
  """
  data = read_bytes(path)
  text = data.decode(encoding)
  lines = text.splitlines()
  while lines and not lines[-1].strip():
    lines.pop()
  if not lines:
    raise DataError(f"{path}: file is empty")
  flat = text.replace(sep, " ").split()
  if len(flat) == len(lines) * num_fields:
    try:
      return np.array(flat, dtype=np.int64).reshape(len(lines), num_fields)
    except ValueError:
      pass
  for lineno, line in enumerate(lines, start=1):
    parts = line.split(sep)
    if len(parts) != num_fields:
      raise DataError(f"{path}:{lineno}: expected {num_fields} fields "
                      f"separated by {sep!r}, got {len(parts)}: {line[:80]!r}")
    for p in parts:
      try:
        int(p)
      except ValueError:
        raise DataError(f"{path}:{lineno}: {p!r} is not an integer") from None
  raise DataError(f"{path}: could not parse")  # pragma: no cover


def quoted_csv(path: str, header: Sequence[str], *, strict: bool,
               encoding: str = "latin-1", delimiter: str = ";",
               warn: Callable[[str], None] | None = None
               ) -> tuple[list[list[str]], int]:
  """Reads a quoted, `delimiter`-separated CSV with a known header.

  Args:
    path: the file.
    header: expected column names (the first line must match).
    strict: True = a malformed line is an error; False = skip it, warn with
      file+line, and count it.
    encoding: text encoding.
    delimiter: field delimiter.
    warn: callback for skip warnings (default: logging.warning).

  Returns:
    (rows, number of skipped lines).
  """
  from absl import logging  # pylint: disable=g-import-not-at-top
  warn = warn or logging.warning
  skipped, shown = 0, 0
  rows: list[list[str]] = []
  with open_text(path, encoding) as f:
    lines = f.read().splitlines()
  if not lines:
    raise DataError(f"{path}: file is empty")
  head = next(csv.reader([lines[0]], delimiter=delimiter))
  if [h.strip() for h in head] != list(header):
    raise DataError(f"{path}:1: header {head} != expected {list(header)}")
  reader = csv.reader(lines[1:], delimiter=delimiter, quotechar='"',
                      escapechar="\\", doublequote=True, strict=True)
  while True:
    try:
      row = next(reader)
      lineno = reader.line_num + 1  # +1: the header line
    except StopIteration:
      break
    except csv.Error as e:
      lineno = reader.line_num + 1
      problem = f"{path}:{lineno}: malformed CSV line ({e})"
      if strict:
        raise DataError(problem) from None
      skipped += 1
      if shown < 5:
        warn(f"skipping {problem}")
        shown += 1
      continue
    if not row:
      continue
    if len(row) != len(header):
      problem = (f"{path}:{lineno}: expected {len(header)} fields, got "
                 f"{len(row)}: {lines[lineno - 1][:80]!r}")
      if strict:
        raise DataError(problem)
      skipped += 1
      if shown < 5:
        warn(f"skipping {problem}")
        shown += 1
      continue
    rows.append(row)
  if skipped:
    warn(f"{path}: skipped {skipped} malformed line(s) in total")
  return rows, skipped


def iter_json_lines(path: str) -> Iterator[tuple[int, dict]]:
  """Yields (line number, object) from a (gzipped) JSON-lines file."""
  import json  # pylint: disable=g-import-not-at-top
  with open_text(path, "utf-8") as f:
    for lineno, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        yield lineno, json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None


def obj(values) -> np.ndarray:
  """A 1-D object array of python strings."""
  values = list(values)
  out = np.empty(len(values), dtype=object)
  out[:] = values
  return out


def factorize(values) -> tuple[np.ndarray, np.ndarray]:
  """(sorted distinct values as an object array, int64 inverse index).

  Hash-based (pandas), much faster than np.unique on python strings.
  """
  import pandas as pd  # pylint: disable=g-import-not-at-top
  codes, uniq = pd.factorize(np.asarray(values, dtype=object), sort=True)
  return obj(uniq.tolist()), codes.astype(np.int64)
