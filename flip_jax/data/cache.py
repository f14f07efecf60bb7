"""On-disk columnar cache with atomic publication.

A cache entry is a directory of `.npy` files (string columns as UTF-8 bytes +
offsets) plus `manifest.json`. It is written into a temporary sibling
directory and published with one `os.replace`, so a reader sees either the
complete entry or nothing; a crash mid-write leaves only a `.tmp-*` directory,
which is never read (and is removed on the next successful write of that key
once its writer is gone: several processes may fill one cache at once).
Keys are fingerprints of the raw files (name, size, mtime, sha256 of the first
and last MiB) and of the relevant config.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from typing import Iterator, Mapping, Sequence

import numpy as np

from flip_jax import jsonio

_CHUNK = 1 << 20
# A leftover temp directory of another host (whose writer this host cannot
# see) is removed only when untouched this long.
_FOREIGN_STALE_SEC = 24 * 3600


def file_fingerprint(path: str) -> dict:
  """Cheap identity of a file: size, mtime and hashes of its ends."""
  st = os.stat(path)
  h = hashlib.sha256()
  with open(path, "rb") as f:
    h.update(f.read(_CHUNK))
    if st.st_size > 2 * _CHUNK:
      f.seek(st.st_size - _CHUNK)
      h.update(f.read(_CHUNK))
  return {"name": os.path.basename(path), "size": st.st_size,
          "mtime_ns": st.st_mtime_ns, "sha256_ends": h.hexdigest()}


def fingerprint(files: Sequence[str], config: Mapping) -> str:
  """16-hex-digit key of raw files + a JSON-able config mapping."""
  payload = {"files": [file_fingerprint(p) for p in sorted(files)],
             "config": config}
  blob = json.dumps(payload, sort_keys=True, default=str).encode()
  return hashlib.sha256(blob).hexdigest()[:16]


def is_complete(path: str) -> bool:
  return os.path.isfile(os.path.join(path, "manifest.json"))


@contextlib.contextmanager
def atomic_dir(final: str) -> Iterator[str]:
  """Yields a temp directory that becomes `final` on success.

  If `final` appeared meanwhile (another process won the race), the temp
  directory is discarded and `final` is kept. On an exception the temp
  directory is removed and nothing is published. Temp directories carry
  their writer's host and pid: a success removes the leftovers of crashed
  writers of the same key, never one whose writer is still running.
  """
  parent = os.path.dirname(os.path.abspath(final))
  os.makedirs(parent, exist_ok=True)
  base = os.path.basename(final) + ".tmp-"
  tmp = tempfile.mkdtemp(
      prefix=f"{base}{socket.gethostname()}-{os.getpid()}-", dir=parent)
  try:
    yield tmp
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  try:
    os.replace(tmp, final)
  except OSError:
    if not is_complete(final):
      shutil.rmtree(tmp, ignore_errors=True)
      raise
    shutil.rmtree(tmp, ignore_errors=True)
  for name in os.listdir(parent):
    full = os.path.join(parent, name)
    if name.startswith(base) and full != tmp and _abandoned(
        full, name[len(base):]):
      shutil.rmtree(full, ignore_errors=True)


def _abandoned(path: str, tag: str) -> bool:
  """Whether the writer of temp directory `path` (tag `<host>-<pid>-<random>`)
  is gone: a dead pid on this host; elsewhere (or an old-style name) only
  when untouched for `_FOREIGN_STALE_SEC`."""
  parts = tag.rsplit("-", 2)  # host names may hold '-'; the rest do not
  if (len(parts) == 3 and parts[1].isdigit()
      and parts[0] == socket.gethostname()):
    try:
      os.kill(int(parts[1]), 0)
    except ProcessLookupError:
      return True
    except PermissionError:  # alive, another user's
      pass
    return False
  try:
    return time.time() - os.stat(path).st_mtime > _FOREIGN_STALE_SEC
  except FileNotFoundError:
    return False


def _is_text(a: np.ndarray) -> bool:
  return a.dtype == object or a.dtype.kind == "U"


def save_columns(directory: str, prefix: str,
                 columns: Mapping[str, np.ndarray]) -> list[str]:
  """Writes columns as `<prefix>.<name>.npy` files; returns the names."""
  for name, a in columns.items():
    base = os.path.join(directory, f"{prefix}.{name}")
    if _is_text(a):
      encoded = [str(s).encode("utf-8") for s in a]
      offsets = np.zeros(len(encoded) + 1, np.int64)
      offsets[1:] = np.cumsum([len(e) for e in encoded])
      np.save(base + ".utf8.npy", np.frombuffer(b"".join(encoded), np.uint8))
      np.save(base + ".offsets.npy", offsets)
    else:
      np.save(base + ".npy", np.ascontiguousarray(a))
  return list(columns)


def load_columns(directory: str, prefix: str, names: Sequence[str],
                 mmap: bool = False) -> dict[str, np.ndarray]:
  """Reads columns written by save_columns (string columns as objects)."""
  out = {}
  for name in names:
    base = os.path.join(directory, f"{prefix}.{name}")
    if os.path.isfile(base + ".npy"):
      out[name] = np.load(base + ".npy", mmap_mode="r" if mmap else None)
      continue
    raw = np.load(base + ".utf8.npy").tobytes()
    offsets = np.load(base + ".offsets.npy")
    text = np.empty(len(offsets) - 1, dtype=object)
    text[:] = [raw[a:b].decode("utf-8")
               for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    out[name] = text
  return out


def write_json(path: str, obj) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=1, ensure_ascii=False, default=str)


def read_json(path: str):
  """A cache JSON file; bad JSON raises a ValueError naming the file."""
  return jsonio.read_json(path)
