"""Registry of raw dataset readers, plus the generic CSV/parquet reader.

`load_raw(data_cfg, data_dir)` dispatches on `data_cfg.dataset` through
`READERS`; every reader returns a `rawio.RawTable`. `dataset_names()` is the
list of datasets the configs and launchers accept.
"""
from __future__ import annotations

import csv
import glob
import io
import os
from typing import Callable

import numpy as np

from flip_jax.data import books
from flip_jax.data import movielens
from flip_jax.data import rawio
from flip_jax.data import rawparse


def _read_csv_rows(path: str, sep: str, encoding: str, info: dict):
  """A delimited text file -> (header, rows, line numbers), strictly.

  Every record must have exactly the header's number of fields (pandas
  pads a short row silently, which shifts nothing but invents empty
  values; csv's strict mode also rejects bad quoting). A one-character
  `sep` follows CSV quoting rules; a longer one splits lines as they are.
  """
  data = rawio.read_bytes(path)
  rawio.check_encoding(path, data, encoding, info)
  text = rawio.decode(path, data, encoding)
  if text.startswith("\ufeff"):
    text = text[1:]
  if not sep:
    raise rawio.DataError("csv source: data.csv.sep is empty")
  if len(sep) == 1:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep,
                        quotechar='"', doublequote=True, strict=True)
    records = []
    try:
      for row in reader:
        records.append((reader.line_num, row))
    except csv.Error as e:
      raise rawio.DataError(f"{path}:{reader.line_num + 1}: malformed CSV "
                            f"line ({e})") from None
  else:  # pandas' one regex separator, else a literal multi-char one
    split = ((lambda line: line.split()) if sep == r"\s+"
             else (lambda line: line.split(sep)))
    records = [(i, split(line))
               for i, line in enumerate(text.splitlines(), start=1)]
  records = [(i, r) for i, r in records if r and any(v.strip() for v in r)]
  if not records:
    raise rawio.DataError(f"{path}: file is empty")
  (_, header), body = records[0], records[1:]
  header = [h.strip() for h in header]
  dup = sorted({h for h in header if header.count(h) > 1})
  if dup:
    raise rawio.DataError(f"{path}:1: repeated column name(s) {dup}")
  for line, row in body:
    if len(row) != len(header):
      raise rawio.DataError(
          f"{path}:{line}: expected {len(header)} fields separated by "
          f"{sep!r}, got {len(row)}: {sep.join(row)[:80]!r}")
  return header, [r for _, r in body], np.array([i for i, _ in body],
                                                np.int64)


def load_csv(data_dir: str, spec) -> rawio.RawTable:
  """Reads a CSV or parquet file described by a small field spec.

  Args:
    data_dir: directory holding `spec.path` (an absolute path also works).
    spec: ConfigDict with `path`, `format` ('csv'|'parquet'|'' = by suffix),
      `sep`, `encoding`, `fields` (categorical columns, in field order),
      `display_names` (clause names; empty = the column names),
      `rating_column` (or '' with `label_column`, an already 0/1 label) and
      `timestamp_column` ('' = none).

  Returns:
    The RawTable. Every CSV record must have exactly the header's fields;
    ratings must be finite numbers, timestamps positive (seconds, or dates
    after 1970); errors name file:line. Repeated rows are a counted warning.
  """
  import pandas as pd  # pylint: disable=g-import-not-at-top
  path = spec.path if os.path.isabs(spec.path) else os.path.join(
      data_dir or "", spec.path)
  if not spec.path or not os.path.isfile(path):
    raise rawio.DataError(f"csv source: file {path!r} not found (set "
                          "data.csv.path, relative to data_dir)")
  info: dict = {"file": path}
  fmt = spec.format or ("parquet" if path.endswith(".parquet") else "csv")
  if fmt == "parquet":
    try:
      frame = pd.read_parquet(path)
    except (OSError, ValueError) as e:
      raise rawio.DataError(f"{path}: not a readable parquet file ({e})"
                            ) from None
    lines = np.arange(1, len(frame) + 1)
    where = "row"
  elif fmt == "csv":
    header, rows, lines = _read_csv_rows(path, spec.sep, spec.encoding, info)
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    where = "line"
  else:
    raise rawio.DataError(f"csv source: format {fmt!r} must be csv or parquet")

  def at(i: int) -> str:
    return f"{path}:{lines[i]}" if where == "line" else f"{path}: row {i + 1}"

  def shown(v) -> str:
    return repr(v.item() if isinstance(v, np.generic) else v)

  fields = list(spec.fields)
  if not fields:
    raise rawio.DataError("csv source: data.csv.fields lists no columns")
  target = spec.rating_column or spec.label_column
  if bool(spec.rating_column) == bool(spec.label_column):
    raise rawio.DataError("csv source: set exactly one of data.csv."
                          "rating_column and data.csv.label_column")
  wanted = fields + [target] + (
      [spec.timestamp_column] if spec.timestamp_column else [])
  missing = [c for c in wanted if c not in frame.columns]
  if missing:
    raise rawio.DataError(f"{path}: missing column(s) {missing}; columns are "
                          f"{list(frame.columns)}")
  display = list(spec.display_names) or fields
  if len(display) != len(fields):
    raise rawio.DataError(f"csv source: {len(display)} display_names for "
                          f"{len(fields)} fields")
  rating = pd.to_numeric(frame[target], errors="coerce").to_numpy(np.float64)
  bad = np.flatnonzero(~np.isfinite(rating))
  if len(bad):
    raise rawio.DataError(f"{at(bad[0])}: {target} "
                          f"{shown(frame[target].iloc[bad[0]])} is not a "
                          "number")
  if spec.label_column and not np.isin(rating, (0.0, 1.0)).all():
    i = int(np.flatnonzero(~np.isin(rating, (0.0, 1.0)))[0])
    raise rawio.DataError(f"{at(i)}: label {rating[i]} is not 0/1")
  timestamp = None
  if spec.timestamp_column:
    col = frame[spec.timestamp_column]
    ts = pd.to_numeric(col, errors="coerce")
    if ts.isna().any():
      ts = pd.to_datetime(col, errors="coerce", utc=True)
      if ts.isna().any():
        i = int(np.flatnonzero(ts.isna().to_numpy())[0])
        raise rawio.DataError(f"{at(i)}: timestamp {shown(col.iloc[i])} is "
                              "neither a number nor a date")
      ts = ts.astype("int64") // 10**9
    values = ts.to_numpy(np.float64)
    bad = np.flatnonzero(~(values > 0) | (values >= 2.0**63))
    if len(bad):
      raise rawio.DataError(f"{at(bad[0])}: timestamp "
                            f"{shown(col.iloc[bad[0]])} is not a positive "
                            "time (seconds since 1970)")
    timestamp = ts.to_numpy(np.int64)
  keys = [rawparse.obj(" ".join(str(v).split()) or "unknown"
                    for v in frame[c].tolist()) for c in fields]
  repeated = int(frame.duplicated(subset=wanted).sum())
  if repeated:
    rawio.warn(info, "duplicate_rating_rows", repeated,
               f"{path}: {repeated} row(s) repeat an earlier row in every "
               f"used column ({', '.join(wanted)}); they are all kept")
  return rawio.RawTable(
      name="csv", field_names=tuple(fields), display_names=tuple(display),
      keys=keys, values=[k.copy() for k in keys], rating=rating,
      timestamp=timestamp, info=info)


# The one list of dataset names (`dataset_names`); its order is the order
# in which help texts and error messages list them.
READERS: dict[str, Callable] = {
    # 'synthetic' writes ML-1M raw files first (see prepare.load_dataset).
    "synthetic": lambda cfg, d: movielens.load_ml1m(d),
    "ml-1m": lambda cfg, d: movielens.load_ml1m(d),
    "ml-100k": lambda cfg, d: movielens.load_ml100k(d),
    "bookcrossing": lambda cfg, d: books.load_bookcrossing(
        d, cfg.drop_zero_ratings),
    "goodreads": lambda cfg, d: books.load_goodreads(d, cfg.drop_zero_ratings),
    "csv": lambda cfg, d: load_csv(d, cfg.csv),
}


def dataset_names() -> tuple[str, ...]:
  """Every `data.dataset` the data layer reads, in registry order.

  ('synthetic', 'ml-1m', 'ml-100k', 'bookcrossing', 'goodreads', 'csv');
  'synthetic' is a registry entry of its own (generated by
  `prepare.load_dataset`, then read as ML-1M).
  """
  return tuple(READERS)


def check_dataset(name: str) -> None:
  if name not in READERS:
    raise ValueError(f"unknown dataset {name!r}; known datasets: "
                     f"{', '.join(sorted(READERS))}")


def load_raw(data_cfg, data_dir: str) -> rawio.RawTable:
  """Reads the raw files of `data_cfg.dataset` from `data_dir`."""
  check_dataset(data_cfg.dataset)
  table = READERS[data_cfg.dataset](data_cfg, data_dir)
  if table.num_rows == 0:
    raise rawio.DataError(f"{data_cfg.dataset}: no rows read from {data_dir}")
  return table


# Raw files per dataset (globs), fingerprinted to key the cache.
RAW_PATTERNS = {
    "ml-1m": ("users.dat*", "movies.dat*", "ratings*.dat*"),
    "synthetic": ("users.dat", "movies.dat", "ratings.dat"),
    "ml-100k": ("u.data", "u.user", "u.item"),
    "bookcrossing": ("BX-*.csv",),
    "goodreads": ("goodreads_*.json*",),
}


def raw_files(data_cfg, data_dir: str) -> list[str]:
  """The raw files a dataset reads (for the cache fingerprint)."""
  check_dataset(data_cfg.dataset)
  if data_cfg.dataset == "csv":
    p = data_cfg.csv.path
    p = p if os.path.isabs(p) else os.path.join(data_dir or "", p)
    return [p] if os.path.isfile(p) else []
  if not data_dir or not os.path.isdir(data_dir):
    return []
  found = set()
  for pattern in RAW_PATTERNS[data_cfg.dataset]:
    found.update(glob.glob(os.path.join(data_dir, pattern)))
  return sorted(f for f in found if os.path.isfile(f))
