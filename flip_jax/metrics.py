"""Host-side, exact CTR metrics (numpy): AUC, LogLoss, GAUC, RelaImpr.

All metrics are computed over the whole split at once (FLIP.md 6.4), never
averaged over batches.  AUC is the rank statistic with *average ranks* for
tied scores, i.e. P(s+ > s-) + 1/2 P(s+ == s-), identical to sklearn's
``roc_auc_score``.  An optional boolean `mask` drops padding rows.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

LOGLOSS_EPS = 1e-7


def _prepare(labels, scores, mask=None, name="metric"):
  y = np.asarray(labels).reshape(-1)
  s = np.asarray(scores, dtype=np.float64).reshape(-1)
  if y.shape != s.shape:
    raise ValueError(f"{name}: labels {y.shape} and scores {s.shape} differ")
  if mask is not None:
    m = np.asarray(mask, dtype=bool).reshape(-1)
    if m.shape != y.shape:
      raise ValueError(f"{name}: mask {m.shape} vs labels {y.shape}")
    y, s = y[m], s[m]
  if y.size == 0:
    raise ValueError(f"{name}: no examples")
  if not np.all(np.isfinite(s)):
    raise ValueError(f"{name}: {np.sum(~np.isfinite(s))} non-finite scores")
  bad = ~np.isin(y, (0, 1))
  if np.any(bad):
    raise ValueError(f"{name}: labels must be 0/1, got e.g. {y[bad][:3]}")
  return y.astype(np.float64), s


def average_ranks(x: np.ndarray) -> np.ndarray:
  """1-based ranks with ties sharing their average rank."""
  x = np.asarray(x).reshape(-1)
  order = np.argsort(x, kind="mergesort")
  xs = x[order]
  # Start index of each run of equal values.
  starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
  ends = np.r_[starts[1:], xs.size]
  run_rank = (starts + ends + 1) / 2.0                       # mean of 1-based
  ranks = np.empty(x.size, np.float64)
  ranks[order] = np.repeat(run_rank, ends - starts)
  return ranks


def auc(labels, scores, mask=None) -> float:
  """Exact ROC AUC with ties counted 1/2.

  Args:
    labels: 0/1 array.
    scores: predicted scores (probabilities or logits; rank only).
    mask: optional bool array; False rows are ignored.

  Returns:
    The AUC.

  Raises:
    ValueError: only one class present, shape mismatch, non-finite scores.
  """
  y, s = _prepare(labels, scores, mask, "auc")
  n_pos = y.sum()
  n_neg = y.size - n_pos
  if n_pos == 0 or n_neg == 0:
    raise ValueError(f"auc: needs both classes, got {int(n_pos)} positives "
                     f"and {int(n_neg)} negatives")
  r = average_ranks(s)
  return float((r[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def logloss(labels, probs, mask=None, eps: float = LOGLOSS_EPS) -> float:
  """Mean binary cross-entropy of probabilities clipped to [eps, 1-eps]."""
  y, p = _prepare(labels, probs, mask, "logloss")
  if np.any((p < 0) | (p > 1)):
    raise ValueError("logloss: probabilities must lie in [0, 1]")
  p = np.clip(p, eps, 1 - eps)
  return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def gauc(labels, scores, groups, mask=None) -> float:
  """Group AUC: per-group AUC weighted by group size (impressions).

  Groups with a single class are skipped (their AUC is undefined); see
  ``gauc_stats`` for how many.

  Args:
    labels: 0/1 array.
    scores: scores.
    groups: group key per row (e.g. user id).
    mask: optional bool array.

  Returns:
    The weighted mean AUC over the groups that have both classes.
  """
  y, s = _prepare(labels, scores, mask, "gauc")
  g = np.asarray(groups).reshape(-1)
  if mask is not None:
    g = g[np.asarray(mask, bool).reshape(-1)]
  if g.shape != y.shape:
    raise ValueError(f"gauc: groups {g.shape} vs labels {y.shape}")
  value, _, _ = _gauc(y, s, g)
  return value


def _gauc(y, s, g) -> tuple[float, int, int]:
  order = np.argsort(g, kind="mergesort")
  g, y, s = g[order], y[order], s[order]
  starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
  ends = np.r_[starts[1:], g.size]
  total, weight, used = 0.0, 0.0, 0
  for a, b in zip(starts, ends):
    yy = y[a:b]
    if 0 < yy.sum() < yy.size:
      total += (b - a) * auc(yy, s[a:b])
      weight += b - a
      used += 1
  if weight == 0:
    raise ValueError("gauc: no group has both classes")
  return float(total / weight), used, len(starts) - used


def gauc_stats(labels, scores, groups) -> dict[str, float]:
  """gAUC with the number of groups used and of one-class groups excluded."""
  y, s = _prepare(labels, scores, None, "gauc")
  g = np.asarray(groups).reshape(-1)
  if g.shape != y.shape:
    raise ValueError(f"gauc: groups {g.shape} vs labels {y.shape}")
  value, used, excluded = _gauc(y, s, g)
  return {"gauc": value, "gauc_groups": used,
          "gauc_excluded_groups": excluded}


def rela_impr(auc_model: float, auc_base: float) -> float:
  """RelaImpr = (AUC_model - 0.5) / (AUC_base - 0.5) - 1."""
  if auc_base <= 0.5:
    raise ValueError(f"rela_impr: base AUC {auc_base} must exceed 0.5")
  return (auc_model - 0.5) / (auc_base - 0.5) - 1.0


def binary_metrics(labels, probs, mask=None,
                   prefix: str = "") -> Mapping[str, float]:
  """{prefix+'auc', prefix+'logloss', prefix+'num_examples'} in one call."""
  y, _ = _prepare(labels, probs, mask, "binary_metrics")
  return {f"{prefix}auc": auc(labels, probs, mask),
          f"{prefix}logloss": logloss(labels, probs, mask),
          f"{prefix}num_examples": int(y.size)}
