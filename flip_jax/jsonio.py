"""JSON files: atomic writes and reads whose errors name the file.

  write_json_atomic(path, obj)   temp file in the same folder + os.replace
  read_json(path, expect=None)   json.load; bad JSON (or not of type
                                 `expect`) -> JSONFileError naming the
                                 file, line and column

Run files (``config.json``, ``results.json``, ``best.json``, ...) are written
with `write_json_atomic`: a reader never sees a partial file, and a writer
that fails (an object JSON cannot encode, a full disk, a kill) leaves the
previous file as it was.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import numpy as np


class JSONFileError(ValueError):
  """A file that is not valid JSON (or not UTF-8); the message names it.

  Attributes:
    path: the file.
    lineno, colno: where decoding failed (None for a UTF-8 error).
  """

  def __init__(self, message: str, path: str, lineno: int | None = None,
               colno: int | None = None):
    super().__init__(message)
    self.path = path
    self.lineno = lineno
    self.colno = colno


def _json_default(obj):
  if isinstance(obj, (np.generic, np.ndarray)) or hasattr(obj, "__array__"):
    return np.asarray(obj).tolist()
  if isinstance(obj, os.PathLike):
    return os.fspath(obj)
  raise TypeError(f"write_json_atomic: cannot encode {type(obj).__name__}")


def write_json_atomic(path: str | os.PathLike, obj) -> None:
  """Writes JSON via a temporary file in the same directory + os.replace.

  Readers never see a partial file, even if the writer is killed; if
  serialisation fails the previous file is left intact and the temporary
  file is removed.

  Args:
    path: destination file (its directory is created if needed).
    obj: JSON-serialisable object (numpy/jax scalars and arrays allowed).
  """
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".",
                             suffix=".tmp", dir=directory)
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(obj, f, indent=2, sort_keys=True, default=_json_default)
      f.write("\n")
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


_JSON_TYPES = {dict: "object", list: "array", str: "string"}


def read_json(path: str | os.PathLike, expect: type | None = None) -> Any:
  """Reads a UTF-8 JSON file.

  Args:
    path: the file.
    expect: the Python type the top-level value must have (dict for a
      JSON object ...); None: any.

  Returns:
    The decoded object.

  Raises:
    FileNotFoundError: no such file (the message names it).
    JSONFileError: (a ValueError) the file is not valid JSON or not UTF-8;
      the message is ``'<path>: invalid JSON at line L column C: <why>'``;
      or its value is not of type `expect` (a damaged file that still
      parses, e.g. one cut down to ``[]``).
  """
  path = os.fspath(path)
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except UnicodeDecodeError as e:
    raise JSONFileError(f"{path}: invalid JSON: not UTF-8 text ({e.reason} "
                        f"at byte {e.start})", path) from e
  try:
    obj = json.loads(text)
  except json.JSONDecodeError as e:
    raise JSONFileError(f"{path}: invalid JSON at line {e.lineno} column "
                        f"{e.colno}: {e.msg}", path, e.lineno, e.colno
                        ) from e
  if expect is not None and not isinstance(obj, expect):
    want = _JSON_TYPES.get(expect, expect.__name__)
    raise JSONFileError(f"{path}: expected a JSON {want}, found "
                        f"{json.dumps(obj)[:40]} (a damaged file?)", path)
  return obj
