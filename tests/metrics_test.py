"""Exact AUC / LogLoss / GAUC / RelaImpr against brute-force references."""
import numpy as np
import pytest

from flip_jax import metrics


def _brute_auc(y, s):
  pos, neg = s[y == 1], s[y == 0]
  wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (
      pos[:, None] == neg[None, :]).sum()
  return wins / (pos.size * neg.size)


@pytest.mark.parametrize("seed", range(5))
def test_auc_with_ties_matches_pairwise_count(seed):
  rng = np.random.RandomState(seed)
  n = rng.randint(20, 300)
  y = (rng.rand(n) < 0.4).astype(np.float32)
  y[:2] = (0, 1)
  # Few distinct values -> many ties, some of them across classes.
  s = np.round(rng.rand(n) + 0.3 * y, 1).astype(np.float32)
  np.testing.assert_allclose(metrics.auc(y, s), _brute_auc(y, s), rtol=1e-12)


def test_auc_known_values_and_mask():
  assert metrics.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
  assert metrics.auc([0, 1], [0.5, 0.5]) == 0.5
  assert metrics.auc([1, 0, 1], [0.9, 0.1, 0.9]) == 1.0
  # Padding rows (mask False) would flip the result if counted.
  y = np.array([0, 1, 1, 0]); s = np.array([0.2, 0.8, 0.0, 0.9])
  assert metrics.auc(y, s, mask=[1, 1, 0, 0]) == 1.0
  with pytest.raises(ValueError, match="both classes"):
    metrics.auc([1, 1], [0.2, 0.3])
  with pytest.raises(ValueError, match="differ"):
    metrics.auc([1, 0], [0.2])
  with pytest.raises(ValueError, match="non-finite"):
    metrics.auc([1, 0], [np.nan, 0.1])
  with pytest.raises(ValueError, match="0/1"):
    metrics.auc([2, 0], [0.3, 0.1])


def test_average_ranks():
  np.testing.assert_array_equal(metrics.average_ranks([3, 1, 3, 2, 3]),
                                [4, 1, 4, 2, 4])


def test_logloss_matches_reference_and_clips():
  rng = np.random.RandomState(0)
  y = (rng.rand(500) < 0.3).astype(np.float64)
  p = rng.rand(500)
  want = -np.mean([np.log(pi) if yi else np.log(1 - pi)
                   for yi, pi in zip(y, p)])
  np.testing.assert_allclose(metrics.logloss(y, p), want, rtol=1e-12)
  # Exact 0/1 predictions are clipped, giving a large finite loss.
  ll = metrics.logloss([1, 0], [0.0, 1.0])
  np.testing.assert_allclose(ll, -np.log(metrics.LOGLOSS_EPS), rtol=1e-6)
  np.testing.assert_allclose(metrics.logloss([1, 0, 1], [0.8, 0.3, 0.0],
                                             mask=[1, 1, 0]),
                             -(np.log(0.8) + np.log(0.7)) / 2)
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    metrics.logloss([1], [1.5])


def test_gauc_weights_groups_and_skips_single_class():
  y = np.array([1, 0, 1, 0, 0, 1, 1])
  s = np.array([0.9, 0.1, 0.2, 0.8, 0.5, 0.7, 0.6])
  g = np.array([0, 0, 1, 1, 1, 2, 2])  # group 2 is all positive: skipped
  want = (2 * 1.0 + 3 * 0.0) / 5
  np.testing.assert_allclose(metrics.gauc(y, s, g), want)
  with pytest.raises(ValueError, match="no group"):
    metrics.gauc([1, 1], [0.1, 0.2], [0, 1])


def test_rela_impr_and_binary_metrics():
  np.testing.assert_allclose(metrics.rela_impr(0.77, 0.75), 0.08)
  with pytest.raises(ValueError):
    metrics.rela_impr(0.7, 0.5)
  out = metrics.binary_metrics([0, 1, 1], [0.2, 0.7, 0.6], prefix="valid/")
  assert out["valid/auc"] == 1.0 and out["valid/num_examples"] == 3


def test_gauc_stats_against_a_direct_computation():
  """Impression-weighted mean of per-user AUCs (pairs counted directly);
  users with one class only are excluded and counted."""
  rs = np.random.RandomState(3)
  groups = rs.randint(0, 30, 600)
  labels = (rs.rand(600) < 0.4).astype(np.float32)
  labels[groups == 7] = 1.0  # one-class users: excluded
  labels[groups == 11] = 0.0
  scores = rs.rand(600) + 0.3 * labels
  total = weight = 0.0
  used = excluded = 0
  for g in np.unique(groups):
    y, s = labels[groups == g], scores[groups == g]
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0:
      excluded += 1
      continue
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (
        pos[:, None] == neg[None, :]).sum()
    total += len(y) * pairs / (len(pos) * len(neg))
    weight += len(y)
    used += 1
  got = metrics.gauc_stats(labels, scores, groups)
  assert excluded >= 2
  np.testing.assert_allclose(got["gauc"], total / weight, rtol=1e-12)
  assert (got["gauc_groups"], got["gauc_excluded_groups"]) == (used, excluded)
  assert got["gauc"] != metrics.auc(labels, scores)
