"""What protects a run's workdir: one writer at a time, no silent rewrites.

* ``WorkdirLock``: an exclusive ``fcntl`` lock on ``<workdir>/.lock`` held for
  the whole run by process 0. A second run on the same workdir refuses at
  once, naming the holder. The kernel releases the lock when its process
  dies (kill -9 included), so a lock left by a dead process is taken over,
  with a warning naming the dead holder.
* ``check_rerun``: a rerun on a workdir that already has checkpoints or
  results compares its config with the workdir's ``config.json`` *before
  anything is written*, and refuses when a field that defines the run
  differs (the dataset, the mode, the model ...), naming every such field,
  or when that ``config.json`` is missing.
  The fields in ``MAY_CHANGE`` (run length, cadence, I/O, sharding) may
  change on resume; changing them is logged.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
from typing import Any

from absl import logging

from flip_jax import jsonio
from flip_jax.train import config_compat

LOCK_FILE = ".lock"
# Dotted config fields a resumed run may change (prefixes match subfields).
MAY_CHANGE = (
    "train.max_steps", "train.num_epochs", "train.patience",
    "train.patience_unit", "pretrain.heldout_rows",
    "train.eval_batch_size", "train.eval_every_steps",
    "train.micro_batch_size", "log_every_steps", "ckpt.every_steps",
    "ckpt.keep", "ckpt.async_save", "data.worker_count", "data.data_dir",
    "data.cache_dir", "mesh", "logical_axis_rules", "model.plm.remat",
    "model.plm.name",
)


class WorkdirBusyError(RuntimeError):
  """Another live process holds the workdir's lock."""


class ConfigMismatchError(ValueError):
  """A rerun's config differs from the workdir's in a defining field."""


class WorkdirLock:
  """Exclusive lock of a workdir for the life of a run (see module doc)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd = None

  def acquire(self) -> "WorkdirLock":
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_holder(fd)
      os.close(fd)
      raise WorkdirBusyError(
          f"{os.path.dirname(self.path)} is in use by another run "
          f"({holder}); wait for it to finish or use another --workdir"
      ) from None
    previous = _read_holder(fd)
    if previous != "unknown":
      logging.warning("workdir lock %s: taking over a lock left by %s (that "
                      "process is gone)", self.path, previous)
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(),
                              "host": socket.gethostname()}).encode(), 0)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is not None:
      os.ftruncate(self._fd, 0)
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


def _read_holder(fd) -> str:
  try:
    raw = os.pread(fd, 4096, 0)
    info = json.loads(raw) if raw.strip() else None
  except (OSError, ValueError):
    info = None
  if not info:
    return "unknown"
  return f"pid {info.get('pid')} on {info.get('host')}"


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: tree}


def _may_change(key: str) -> bool:
  return any(key == p or key.startswith(p + ".") for p in MAY_CHANGE)


def has_run_state(workdir: str) -> bool:
  """Whether the workdir holds a run's checkpoints or results."""
  ckpts = os.path.join(workdir, "checkpoints")
  return (os.path.exists(os.path.join(workdir, "results.json"))
          or (os.path.isdir(ckpts) and any(
              n.isdigit() for n in os.listdir(ckpts))))


def config_differences(old: dict, new: dict) -> tuple[list[str], list[str]]:
  """(defining fields that differ, fields that may change and differ)."""
  a = _flatten(config_compat.upgrade(old))
  b = _flatten(config_compat.upgrade(new))
  differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
  return ([k for k in differ if not _may_change(k)],
          [k for k in differ if _may_change(k)])


def check_rerun(config, workdir: str) -> None:
  """Refuses a rerun whose config redefines the workdir's run (module doc)."""
  path = os.path.join(workdir, "config.json")
  if not has_run_state(workdir):
    return
  if not os.path.exists(path):
    raise ConfigMismatchError(
        f"{workdir} holds checkpoints or results but no config.json "
        "(deleted?), so a rerun cannot be checked against the run it "
        "would continue; restore its config.json, or use a new --workdir")
  old = jsonio.read_json(path, expect=dict)
  new = json.loads(config.to_json_best_effort())
  fixed, changed = config_differences(old, new)
  if fixed:
    a, b = (_flatten(config_compat.upgrade(x)) for x in (old, new))
    detail = "; ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in fixed)
    raise ConfigMismatchError(
        f"{workdir} holds a run with another config ({detail}). Rerun with "
        f"the workdir's config to resume, or use a new --workdir. Fields "
        f"that may change on resume: {', '.join(MAY_CHANGE)}")
  if changed:
    logging.warning("resuming %s with changed %s", workdir, ", ".join(changed))
