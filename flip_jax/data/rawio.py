"""Raw-file helpers shared by the dataset readers.

A reader turns a dataset's raw files into a `RawTable`: one string key column
per field (the ID view), one display string column per field (the text view,
codes decoded into words), the rating and, where the dataset has one, a
timestamp. Everything after that (labels, splits, vocabularies, text) is
dataset independent. The line parsers that turn a file into rows and columns
are in `rawparse`.
"""
from __future__ import annotations

import dataclasses
import gzip
import io
import os
import zlib
from typing import Callable, Sequence

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
