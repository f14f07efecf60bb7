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
import zlib
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
              prefix_glob: str | None = None,
              ignored: list[str] | None = None) -> str:
  """Returns the first existing candidate (or a unique prefix match).

  Args:
    data_dir: directory holding the raw files.
    candidates: exact file names, in order of preference.
    prefix_glob: optional (prefix, suffixes) style pattern 'ratings*.dat'
      accepting e.g. 'ratings_users0001-2999.dat.gz'.
    ignored: when given, the names of other files that the candidates or
      the pattern also match (present, but not read) are appended to it.

  Returns:
    The path of the file found.

  Raises:
    DataError: none (or several ambiguous) found; lists what was expected.
  """
  if not data_dir or not os.path.isdir(data_dir):
    raise DataError(f"data_dir {data_dir!r} is not a directory; expected it "
                    f"to contain {', '.join(candidates)}")
  matches = []
  if prefix_glob:
    prefix, suffix = prefix_glob.split("*")
    matches = sorted(
        f for f in os.listdir(data_dir)
        if f.startswith(prefix) and (f.endswith(suffix)
                                     or f.endswith(suffix + ".gz"))
        and os.path.isfile(os.path.join(data_dir, f)))
  present = [c for c in candidates
             if os.path.isfile(os.path.join(data_dir, c))]
  if present:
    chosen = present[0]
    if ignored is not None:
      ignored.extend(f for f in dict.fromkeys(present + matches)
                     if f != chosen)
    return os.path.join(data_dir, chosen)
  if len(matches) == 1:
    return os.path.join(data_dir, matches[0])
  if len(matches) > 1:
    raise DataError(f"{data_dir}: several files match {prefix_glob}: "
                    f"{matches}; keep one")
  listing = sorted(os.listdir(data_dir))[:20]
  raise DataError(
      f"{data_dir}: missing {' or '.join(candidates)}"
      + (f" (or {prefix_glob}[.gz])" if prefix_glob else "")
      + f"; directory holds {listing}")


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
  """Reads a file, gunzipping transparently (by magic bytes).

  Raises:
    DataError: a truncated or corrupt gzip file, naming it.
  """
  with open(path, "rb") as f:
    data = f.read()
  if data[:2] == b"\x1f\x8b":
    try:
      data = gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as e:
      raise DataError(f"{path}: truncated or corrupt gzip file ({e})"
                      ) from None
  return data


def decode(path: str, data: bytes, encoding: str) -> str:
  """`data.decode(encoding)`; a decoding error names the file and byte."""
  try:
    return data.decode(encoding)
  except UnicodeDecodeError as e:
    raise DataError(f"{path}: not {encoding} text ({e.reason} at byte "
                    f"{e.start})") from None


def open_text(path: str, encoding: str) -> io.TextIOBase:
  """Opens a text file, gzip or not, with the given encoding.

  Streaming readers must catch `STREAM_ERRORS` while reading and report
  them with `stream_error` (a truncated gzip file shows only then).
  """
  with open(path, "rb") as f:
    magic = f.read(2)
  if magic == b"\x1f\x8b":
    return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding,
                            newline="")
  return open(path, "r", encoding=encoding, newline="")


# What reading a (gzipped) text stream raises on a bad file.
STREAM_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, UnicodeDecodeError)


def stream_error(path: str, e: BaseException) -> DataError:
  """A DataError naming `path` for one of `STREAM_ERRORS`."""
  if isinstance(e, UnicodeDecodeError):
    return DataError(f"{path}: not {e.encoding} text ({e.reason})")
  return DataError(f"{path}: truncated or corrupt gzip file ({e})")


# ---------------------------------------------------------------------------
# Suspicious input: counted in `RawTable.info['warnings']` (kind -> count;
# prepare copies it to stats.json) and logged with absl logging.warning.
# The data is kept as read; BUILD.md "Reliability policies" lists the kinds.


def warn(info: dict, kind: str, count: int, message: str) -> None:
  """Counts `count` suspicious items of `kind` in `info` and logs `message`."""
  if count <= 0:
    return
  from absl import logging  # pylint: disable=g-import-not-at-top
  counts = info.setdefault("warnings", {})
  counts[kind] = counts.get(kind, 0) + int(count)
  info.setdefault("warning_messages", []).append(message)
  logging.warning("data: %s", message)


def check_encoding(path: str, data: bytes, encoding: str, info: dict | None
                   ) -> None:
  """Warns when a file documented as latin-1 is in fact UTF-8.

  Decoded as latin-1, UTF-8 text turns into mojibake ('Café' -> 'CafÃ©').
  Real latin-1 text with accents is almost never valid UTF-8, so a file
  that has non-ASCII bytes and decodes as UTF-8 is reported (kind
  `utf8_in_latin1_lines`, counting its non-ASCII lines).
  """
  if info is None or encoding.lower().replace("_", "-") not in (
      "latin-1", "latin1", "iso-8859-1", "iso8859-1"):
    return
  if data.isascii():
    return
  try:
    data.decode("utf-8")
  except UnicodeDecodeError:
    return
  lines = [i for i, line in enumerate(data.splitlines(), start=1)
           if not line.isascii()]
  warn(info, "utf8_in_latin1_lines", len(lines),
       f"{path}: {len(lines)} line(s) (first: line {lines[0]}) are UTF-8 but "
       f"the format is {encoding}; their text reads as mojibake (e.g. "
       "'Ã©' for 'é'). Re-encode the file as latin-1.")


def warn_duplicate_ids(info: dict, path: str, what: str, rows: Sequence,
                       key: Callable, lines: Sequence[int]) -> None:
  """Warns about rows repeating an earlier row's id (the first row wins).

  Kind `duplicate_<what>_ids` counts the repeated rows; the message says
  how many of them differ from the first row.
  """
  first: dict = {}
  repeated, differing, example = 0, 0, None
  for row, line in zip(rows, lines):
    k = key(row)
    if k in first:
      repeated += 1
      if list(first[k][0]) != list(row):
        differing += 1
        example = example or (k, first[k][1], line)
    else:
      first[k] = (row, line)
  if repeated:
    detail = (f"; e.g. id {example[0]} at lines {example[1]} and "
              f"{example[2]}" if example else "")
    warn(info, f"duplicate_{what}_ids", repeated,
         f"{path}: {repeated} row(s) repeat an earlier {what} id, "
         f"{differing} of them with different content (the first row "
         f"wins){detail}")


def warn_duplicate_pairs(info: dict, path: str, pair_keys: np.ndarray,
                         full_rows: np.ndarray | None = None,
                         what: str = "(user, item)") -> None:
  """Warns about rating rows repeating an earlier `what` pair (all kept)."""
  n = len(pair_keys)
  if n == 0:
    return
  _, first = np.unique(pair_keys, return_index=True)
  repeated = n - len(first)
  if not repeated:
    return
  exact = ""
  if full_rows is not None:
    exact = (f" ({n - len(np.unique(full_rows, axis=0))} exact copies)")
  line = int(np.setdiff1d(np.arange(n), first)[0]) + 1
  warn(info, "duplicate_rating_rows", repeated,
       f"{path}: {repeated} rating row(s) repeat an earlier {what} pair"
       f"{exact}, first at data row {line}; they are all kept")


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
    info: where suspicious input is counted (`warn`); None = not checked.

  Returns:
    The rows (lists of strings), with their line numbers in `.lines`.

  Raises:
    DataError: a line with the wrong number of fields, naming file and line.
  """
  data = read_bytes(path)
  check_encoding(path, data, encoding, info)
  text = decode(path, data, encoding)
  rows, lines = Rows(), []
  for lineno, line in enumerate(text.splitlines(), start=1):
    if not line.strip():
      continue
    parts = line.split(sep)
    if len(parts) != num_fields:
      raise DataError(f"{path}:{lineno}: expected {num_fields} fields "
                      f"separated by {sep!r}, got {len(parts)}: {line[:80]!r}")
    rows.append(parts)
    lines.append(lineno)
  rows.lines = lines
  if not rows:
    raise DataError(f"{path}: file is empty")
  return rows


_INT64_MAX = np.iinfo(np.int64).max


def _int_or_error(path: str, line: int, what: str, text: str) -> int:
  """A strict ASCII integer ('-'? digits) in int64 range, else DataError."""
  body = text[1:] if text[:1] == "-" else text
  if not (body and body.isascii() and body.isdigit()):
    raise DataError(f"{path}:{line}: {what} {text!r} is not an integer")
  v = int(text)
  if abs(v) > _INT64_MAX:
    raise DataError(f"{path}:{line}: {what} {text!r} is too large (more "
                    "than 64 bits)")
  return v


def check_range(path: str, values: np.ndarray, what: str, *,
                lo: float | None = None, hi: float | None = None,
                lines: Sequence[int] | None = None,
                integer: bool = False) -> None:
  """Every value in [lo, hi] (and whole when `integer`), else DataError.

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
    raise DataError(f"{path}:{line}: {what} {v} outside {rng}"
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
  data = read_bytes(path)
  fast = _numeric_fast(data, sep, num_fields, encoding)
  if fast is not None:
    return fast
  text = decode(path, data, encoding)
  lines = text.splitlines()
  while lines and not lines[-1].strip():
    lines.pop()
  if not lines:
    raise DataError(f"{path}: file is empty")
  out = np.empty((len(lines), num_fields), np.int64)
  for lineno, line in enumerate(lines, start=1):
    parts = line.split(sep)
    if len(parts) != num_fields:
      raise DataError(f"{path}:{lineno}: expected {num_fields} fields "
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
    info: where suspicious input is counted (`check_encoding`).

  Returns:
    (rows with their line numbers in `.lines`, number of skipped lines).
  """
  from absl import logging  # pylint: disable=g-import-not-at-top
  warn = warn or logging.warning
  skipped, shown = 0, 0
  rows, row_lines = Rows(), []
  data = read_bytes(path)
  check_encoding(path, data, encoding, info)
  lines = decode(path, data, encoding).splitlines()
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
    row_lines.append(lineno)
  rows.lines = row_lines
  if skipped:
    warn(f"{path}: skipped {skipped} malformed line(s) in total")
  return rows, skipped


def iter_json_lines(path: str) -> Iterator[tuple[int, dict]]:
  """Yields (line number, object) from a (gzipped) JSON-lines file."""
  import json  # pylint: disable=g-import-not-at-top
  lineno = 0
  with open_text(path, "utf-8") as f:
    it = iter(f)
    while True:
      try:
        line = next(it)
      except StopIteration:
        return
      except STREAM_ERRORS as e:
        raise stream_error(f"{path} (after line {lineno})", e) from None
      lineno += 1
      if not line.strip():
        continue
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
      if not isinstance(rec, dict):
        raise DataError(f"{path}:{lineno}: expected a JSON object, got "
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
