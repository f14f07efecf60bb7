"""On-disk columnar cache with atomic publication and damage detection.

A cache entry is a directory of `.npy` files (string columns as UTF-8 bytes +
offsets) plus `manifest.json`. It is written into a temporary sibling
directory and published with one `os.replace`, so a reader sees either the
complete entry or nothing; a crash mid-write leaves only a `.tmp-*` directory,
which is never read (and is removed on the next successful write of that key
once its writer is gone: several processes may fill one cache at once).
Keys are fingerprints of the raw files (name, size, mtime, sha256 of the first
and last MiB) and of the relevant config.

At publication the manifest records the size and CRC-32 of every file of the
entry (`seal`); a reader asks `usable(path)`, which checks them and moves a
damaged entry (flipped or truncated bytes, a missing or unreadable manifest)
aside with a warning naming the file, so that the caller rebuilds it.
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
import uuid
from typing import Iterator, Mapping, Sequence
import zlib

from absl import logging
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


MANIFEST = "manifest.json"
# Manifest key: file name -> {"size": bytes, "crc32": 8 hex digits} of each
# file of the entry (sub-directories are entries of their own).
DIGESTS = "file_digests"


def _crc32(path: str) -> str:
  crc = 0
  with open(path, "rb") as f:
    while chunk := f.read(8 * _CHUNK):
      crc = zlib.crc32(chunk, crc)
  return f"{crc:08x}"


def _entry_files(directory: str) -> list[str]:
  return sorted(n for n in os.listdir(directory) if n != MANIFEST
                and os.path.isfile(os.path.join(directory, n)))


def seal(directory: str) -> None:
  """Records the size and CRC-32 of each file in the entry's manifest."""
  path = os.path.join(directory, MANIFEST)
  manifest = read_json(path)
  manifest[DIGESTS] = {
      n: {"size": os.path.getsize(os.path.join(directory, n)),
          "crc32": _crc32(os.path.join(directory, n))}
      for n in _entry_files(directory)}
  write_json(path, manifest)


def problem(path: str) -> str | None:
  """What is wrong with the entry at `path`, naming the file (None: intact).

  Every file the manifest records must have its recorded size and CRC-32
  (one read of the entry's bytes: cheap next to loading them).
  """
  manifest_path = os.path.join(path, MANIFEST)
  if not os.path.isfile(manifest_path):
    return f"{manifest_path} is missing (an interrupted or damaged entry)"
  try:
    manifest = read_json(manifest_path)
  except (OSError, ValueError) as e:
    return str(e)
  files = manifest.get(DIGESTS) if isinstance(manifest, dict) else None
  if not isinstance(files, dict):
    return (f"{manifest_path} records no file sizes and digests (written "
            "by an older flip_jax)")
  for name, want in sorted(files.items()):
    full = os.path.join(path, name)
    if not isinstance(want, dict):
      return f"{manifest_path}: a bad record for {name}"
    try:
      size = os.path.getsize(full)
      if size != want.get("size"):
        return f"{full}: {size} bytes, {want.get('size')} when written"
      if _crc32(full) != want.get("crc32"):
        return f"{full}: its CRC-32 differs from the one recorded (damaged)"
    except OSError as e:
      return f"{full}: {e.strerror or e}"
  return None


def is_complete(path: str) -> bool:
  """Whether `path` holds an intact entry (see `problem`)."""
  return problem(path) is None


def _manifest_id(path: str):
  try:
    st = os.stat(os.path.join(path, MANIFEST))
  except OSError:
    return None
  return st.st_ino, st.st_mtime_ns


def _discard(path: str, seen=None) -> bool:
  """Moves the entry at `path` aside and removes it; False when another
  process replaced it since its manifest was `seen` (then it is kept).

  The move is one rename, so the key is free at once for the rebuilt entry;
  a process still reading the old files keeps its open files.
  """
  if seen is not None and _manifest_id(path) != seen:
    return False
  parent, base = os.path.split(os.path.abspath(path))
  aside = os.path.join(parent, f"{base}.tmp-{socket.gethostname()}-"
                               f"{os.getpid()}-damaged{uuid.uuid4().hex}")
  try:
    os.rename(path, aside)
  except FileNotFoundError:
    return True  # another process moved it first
  shutil.rmtree(aside, ignore_errors=True)
  return True


def _legacy(path: str) -> bool:
  """A complete entry of an older flip_jax: a manifest without digests."""
  try:
    manifest = read_json(os.path.join(path, MANIFEST))
  except (OSError, ValueError):
    return False
  return isinstance(manifest, dict) and DIGESTS not in manifest


def usable(path: str) -> bool:
  """Whether `path` holds an intact entry to read.

  An entry that is damaged (see `problem`), or a folder without a manifest,
  is moved aside with a warning naming the file, so that the caller builds
  the entry again (atomically, with `atomic_dir`); no entry: False.
  """
  if not os.path.exists(path):
    return False
  seen = _manifest_id(path)
  if _legacy(path):
    # Written before digests were recorded: trusted as it was then, and
    # sealed now, so that damage from here on is caught.
    logging.info("data cache: recording the digests of %s", path)
    seal(path)
    return True
  why = problem(path)
  if why is None:
    return True
  logging.warning("data cache: %s; rebuilding the entry %s", why, path)
  if not _discard(path, seen):
    return is_complete(path)  # another process rebuilt it meanwhile
  return False


@contextlib.contextmanager
def atomic_dir(final: str) -> Iterator[str]:
  """Yields a temp directory that becomes `final` on success.

  If `final` appeared meanwhile (another process won the race), the temp
  directory is discarded and `final` is kept; a damaged `final` (see
  `problem`) is replaced. The manifest, when the caller wrote one, is
  sealed (`seal`) before publication. On an exception the temp
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
    if os.path.isfile(os.path.join(tmp, MANIFEST)):
      seal(tmp)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  try:
    os.replace(tmp, final)
  except OSError:
    # `final` exists: another writer's entry (kept), or a damaged one (or a
    # folder without a manifest), replaced by this one.
    if not is_complete(final):
      _discard(final)
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
  """A cache JSON file (an object); bad JSON raises a ValueError naming the
  file."""
  return jsonio.read_json(path, expect=dict)
