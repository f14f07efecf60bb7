"""``init_from``: merging another run's params into fresh ones by regexes.

``merge_init(fresh, loaded, keep=..., drop=..., allow_missing=...)`` takes
the loaded value of every param whose '/'-joined path matches a keep regex
(and no drop regex), keeps the fresh value elsewhere, and refuses a kept
param the checkpoint lacks unless an allow-missing regex names it; shapes
must agree. ``InitReport`` says what was taken, re-initialised and dropped.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import jax
import numpy as np
from absl import logging

from flip_jax.tree_paths import param_paths
from flip_jax.tree_paths import path_str


@dataclasses.dataclass
class InitReport:
  """What `merge_init` did, by '/'-joined path."""
  taken: list[str]
  reinitialised: list[str]   # not kept or dropped: fresh values
  missing_allowed: list[str]  # kept, absent from the checkpoint, allowed
  dropped: list[str]  # checkpoint params matching a drop regex

  def summary(self) -> str:
    return (f"taken {len(self.taken)}, re-initialised "
            f"{len(self.reinitialised) + len(self.missing_allowed)} "
            f"({len(self.missing_allowed)} allowed-missing), dropped "
            f"{len(self.dropped)} from the checkpoint")


def _regexes(patterns: Sequence[str], name: str) -> list[re.Pattern]:
  if isinstance(patterns, str):
    raise TypeError(f"merge_init: {name} must be a list of regexes, not a "
                    f"string ({patterns!r})")
  out = []
  for p in patterns:
    try:
      out.append(re.compile(p))
    except re.error as e:
      raise ValueError(f"merge_init: bad {name} regex {p!r}: {e}") from e
  return out


def merge_init(fresh, loaded, *, keep: Sequence[str], drop: Sequence[str],
               allow_missing: Sequence[str] = (),
               return_report: bool = False):
  """Params-only transfer from another run; strict (STYLE.md 5).

  A fresh param whose path matches a `keep` regex and no `drop` regex is
  taken from `loaded`; every other fresh param keeps its fresh value.

  Args:
    fresh: freshly initialised params (defines the output structure).
    loaded: params of the source run (e.g. from `restore_params`).
    keep: regexes (re.search on '/'-joined paths) of params to take.
    drop: regexes of params never taken; checkpoint params matching them
      may stay unused.
    allow_missing: regexes of kept params that may be absent from the
      checkpoint (created only at finetuning); they stay fresh.
    return_report: also return the `InitReport`.

  Returns:
    Params with the structure of `fresh` (and the report if asked).

  Raises:
    ValueError: a kept param is missing (and not allowed) or has another
      shape/dtype kind; or checkpoint params are neither used nor dropped.
  """
  keep_rx = _regexes(keep, "keep")
  drop_rx = _regexes(drop, "drop")
  allow_rx = _regexes(allow_missing, "allow_missing")
  match = lambda rxs, p: any(rx.search(p) for rx in rxs)
  src = param_paths(loaded)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(fresh)
  report = InitReport([], [], [], [])
  out, used = [], set()
  for path, value in leaves:
    p = path_str(path)
    if not match(keep_rx, p) or match(drop_rx, p):
      report.reinitialised.append(p)
      out.append(value)
      continue
    if p not in src:
      if match(allow_rx, p):
        report.missing_allowed.append(p)
        out.append(value)
        continue
      raise ValueError(f"init_from: kept param {p!r} is not in the "
                       "checkpoint (add it to drop or allow_missing)")
    got = np.asarray(src[p])
    if got.shape != tuple(np.shape(value)):
      raise ValueError(f"init_from: param {p!r} has shape {got.shape} in the "
                       f"checkpoint but {tuple(np.shape(value))} here")
    want = np.dtype(getattr(value, "dtype", got.dtype))
    if got.dtype != want:
      if not (np.issubdtype(got.dtype, np.inexact)
              and np.issubdtype(want, np.inexact)):
        raise ValueError(f"init_from: param {p!r} has dtype {got.dtype} in "
                         f"the checkpoint but {want} here")
      got = got.astype(want)
    out.append(got)
    used.add(p)
    report.taken.append(p)
  report.dropped = [p for p in src if p not in used and match(drop_rx, p)]
  leftovers = [p for p in src if p not in used and not match(drop_rx, p)]
  if leftovers:
    raise ValueError(
        f"init_from: {len(leftovers)} checkpoint params are neither used nor "
        f"dropped, e.g. {leftovers[:5]} (add a drop regex or a keep regex)")
  logging.info("init_from: %s", report.summary())
  params = jax.tree_util.tree_unflatten(treedef, out)
  return (params, report) if return_report else params
