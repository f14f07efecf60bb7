"""Line parsers shared by the dataset readers: raw file -> rows or columns.

Strict separated files (`split_lines`, `numeric_table`), quoted CSV
(`quoted_csv`) and JSON lines (`iter_json_lines`); integer columns with
range checks (`parse_ints`, `check_range`); object columns and their codes
(`obj`, `factorize`). Every error is a `rawio.DataError` naming the file and
line; suspicious input is counted with `rawio.warn`.
"""
from __future__ import annotations

import csv
from typing import Callable, Iterator, Sequence

import numpy as np

from flip_jax.data import rawio

class Rows(list):
  """Parsed rows (lists of strings); `lines[i]` is row i's line number."""

  lines: list[int]


def split_lines(path: str, sep: str, num_fields: int,
                encoding: str = "latin-1", info: dict | None = None) -> Rows:
  """Parses a strict `sep`-separated file; a bad line is an error.

  Args:
    path: file (gzip allowed).
    sep: field separator, e.g. '::' or '|'.
    num_fields: exact number of fields every non-empty line must have.
    encoding: text encoding.
    info: where suspicious input is counted (`rawio.warn`); None = not checked.

  Returns:
    The rows (lists of strings), with their line numbers in `.lines`.

  Raises:
    rawio.DataError: a line with the wrong number of fields, naming file and
      line.
  """
  data = rawio.read_bytes(path)
  rawio.check_encoding(path, data, encoding, info)
  text = rawio.decode(path, data, encoding)
  rows, lines = Rows(), []
  for lineno, line in enumerate(text.splitlines(), start=1):
    if not line.strip():
      continue
    parts = line.split(sep)
    if len(parts) != num_fields:
      raise rawio.DataError(f"{path}:{lineno}: expected {num_fields} fields "
                      f"separated by {sep!r}, got {len(parts)}: {line[:80]!r}")
    rows.append(parts)
    lines.append(lineno)
  rows.lines = lines
  if not rows:
    raise rawio.DataError(f"{path}: file is empty")
  return rows


_INT64_MAX = np.iinfo(np.int64).max


def _int_or_error(path: str, line: int, what: str, text: str) -> int:
  """A strict ASCII integer ('-'? digits) in int64 range, else DataError."""
  body = text[1:] if text[:1] == "-" else text
  if not (body and body.isascii() and body.isdigit()):
    raise rawio.DataError(f"{path}:{line}: {what} {text!r} is not an integer")
  v = int(text)
  if abs(v) > _INT64_MAX:
    raise rawio.DataError(f"{path}:{line}: {what} {text!r} is too large (more "
                    "than 64 bits)")
  return v


def check_range(path: str, values: np.ndarray, what: str, *,
                lo: float | None = None, hi: float | None = None,
                lines: Sequence[int] | None = None,
                integer: bool = False) -> None:
  """Every value in [lo, hi] (and whole when `integer`), else rawio.DataError.

  Args:
    path: the file, for the message.
    values: one column.
    what: the column's name, for the message.
    lo: smallest allowed value (None = no bound).
    hi: largest allowed value (None = no bound).
    lines: line number of each value (default: value i is on line i + 1).
    integer: require whole numbers.
  """
  values = np.asarray(values)
  bad = np.zeros(len(values), bool)
  if lo is not None:
    bad |= ~(values >= lo)
  if hi is not None:
    bad |= ~(values <= hi)
  if integer and values.dtype.kind == "f":
    bad |= values != np.round(values)
  if bad.any():
    i = int(np.flatnonzero(bad)[0])
    line = lines[i] if lines is not None else i + 1
    v = values[i]
    v = int(v) if values.dtype.kind in "iu" or (
        np.isfinite(v) and v == int(v)) else float(v)
    rng = ("" if lo is None else f"{lo:g}") + ".." + (
        "" if hi is None else f"{hi:g}")
    raise rawio.DataError(f"{path}:{line}: {what} {v} outside {rng}"
                    + (" (whole numbers)" if integer else "")
                    + f"; {int(bad.sum())} such row(s)")


def parse_ints(path: str, rows: list[list[str]], col: int, what: str, *,
               lo: int | None = None, hi: int | None = None) -> np.ndarray:
  """Column `col` of parsed rows as int64, each value in [lo, hi].

  Values must be plain ASCII integers (no spaces, signs other than '-',
  underscores or other digits); a bad value names its file:line.
  """
  lines = getattr(rows, "lines", None) or list(range(1, len(rows) + 1))
  column = [r[col] for r in rows]
  if all(c.isascii() and c.isdigit() and len(c) <= 18 for c in column):
    out = np.array(column, dtype=np.int64)
  else:
    out = np.array([_int_or_error(path, line, what, c)
                    for c, line in zip(column, lines)], dtype=np.int64)
  check_range(path, out, what, lo=lo, hi=hi, lines=lines)
  return out


def numeric_table(path: str, sep: str, num_fields: int,
                  encoding: str = "latin-1") -> np.ndarray:
  """Strict parse of an all-integer `sep`-separated file to int64 [n, k].

  Used for the large ratings files. Every line must hold exactly
  `num_fields` integers (row i is line i + 1; only trailing blank lines
  are allowed). A vectorised check proves that for a clean file; anything
  else goes through the line-by-line parser, whose error names file:line.
  Value ranges are the caller's (`check_range`).
  """
  data = rawio.read_bytes(path)
  fast = _numeric_fast(data, sep, num_fields, encoding)
  if fast is not None:
    return fast
  text = rawio.decode(path, data, encoding)
  lines = text.splitlines()
  while lines and not lines[-1].strip():
    lines.pop()
  if not lines:
    raise rawio.DataError(f"{path}: file is empty")
  out = np.empty((len(lines), num_fields), np.int64)
  for lineno, line in enumerate(lines, start=1):
    parts = line.split(sep)
    if len(parts) != num_fields:
      raise rawio.DataError(f"{path}:{lineno}: expected {num_fields} fields "
                      f"separated by {sep!r}, got {len(parts)}: {line[:80]!r}")
    for j, p in enumerate(parts):
      out[lineno - 1, j] = _int_or_error(path, lineno, f"field {j + 1}", p)
  return out


_POW10 = 10.0 ** np.arange(16)


def _numeric_fast(data: bytes, sep: str, num_fields: int, encoding: str
                  ) -> np.ndarray | None:
  """The table when every line is exactly `num_fields` digit runs, else None.

  Proof of shape: the bytes are only digits, one-byte separators and
  newlines; the boundary characters, in order, are exactly (num_fields - 1)
  separators then a newline, line after line; no field is empty. Values
  (at most 15 digits, exact in float64) are summed digit by digit.
  """
  unit = sep.encode(encoding)
  data = data.replace(b"\r\n", b"\n").rstrip(b"\n")
  if not data:
    return None
  if len(unit) != 1:
    if b"\t" in data:
      return None
    data, unit = data.replace(unit, b"\t"), b"\t"
  arr = np.frombuffer(data + b"\n", np.uint8)
  boundary = (arr == 10) | (arr == unit[0])
  if not (boundary | ((arr >= 48) & (arr <= 57))).all():
    return None
  ends = np.flatnonzero(boundary)  # one per field
  if len(ends) % num_fields:
    return None
  kinds = arr[ends].reshape(-1, num_fields)
  if not ((kinds[:, :-1] == unit[0]).all() and (kinds[:, -1] == 10).all()):
    return None
  width = np.diff(ends, prepend=-1) - 1
  if width.min() < 1 or width.max() > 15:
    return None  # an empty field, or a long number: the slow path decides
  field = np.cumsum(boundary)[~boundary]
  pos = np.flatnonzero(~boundary)
  values = np.bincount(field, weights=(arr[pos] - 48) * _POW10[
      ends[field] - pos - 1], minlength=len(ends))
  return values.astype(np.int64).reshape(-1, num_fields)


def quoted_csv(path: str, header: Sequence[str], *, strict: bool,
               encoding: str = "latin-1", delimiter: str = ";",
               warn: Callable[[str], None] | None = None,
               info: dict | None = None) -> tuple[Rows, int]:
  """Reads a quoted, `delimiter`-separated CSV with a known header.

  Args:
    path: the file.
    header: expected column names (the first line must match).
    strict: True = a malformed line is an error; False = skip it, warn with
      file+line, and count it.
    encoding: text encoding.
    delimiter: field delimiter.
    warn: callback for skip warnings (default: logging.warning).
    info: where suspicious input is counted (`rawio.check_encoding`).

  Returns:
    (rows with their line numbers in `.lines`, number of skipped lines).
  """
  from absl import logging  # pylint: disable=g-import-not-at-top
  warn = warn or logging.warning
  skipped, shown = 0, 0
  rows, row_lines = Rows(), []
  data = rawio.read_bytes(path)
  rawio.check_encoding(path, data, encoding, info)
  lines = rawio.decode(path, data, encoding).splitlines()
  if not lines:
    raise rawio.DataError(f"{path}: file is empty")
  head = next(csv.reader([lines[0]], delimiter=delimiter))
  if [h.strip() for h in head] != list(header):
    raise rawio.DataError(f"{path}:1: header {head} != expected {list(header)}")
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
        raise rawio.DataError(problem) from None
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
        raise rawio.DataError(problem)
      skipped += 1
      if shown < 5:
        warn(f"skipping {problem}")
        shown += 1
      continue
    rows.append(row)
    row_lines.append(lineno)
  rows.lines = row_lines
  if skipped:
    warn(f"{path}: skipped {skipped} malformed line(s) in total")
  return rows, skipped


def iter_json_lines(path: str) -> Iterator[tuple[int, dict]]:
  """Yields (line number, object) from a (gzipped) JSON-lines file."""
  import json  # pylint: disable=g-import-not-at-top
  lineno = 0
  with rawio.open_text(path, "utf-8") as f:
    it = iter(f)
    while True:
      try:
        line = next(it)
      except StopIteration:
        return
      except rawio.STREAM_ERRORS as e:
        raise rawio.stream_error(f"{path} (after line {lineno})", e) from None
      lineno += 1
      if not line.strip():
        continue
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        raise rawio.DataError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
      if not isinstance(rec, dict):
        raise rawio.DataError(f"{path}:{lineno}: expected a JSON object, got "
                        f"{type(rec).__name__}")
      yield lineno, rec


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
