"""Tests for flip_jax.losses against float64 NumPy transcriptions."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax.sharding import NamedSharding, PartitionSpec as P

from flip_jax import losses
from flip_jax import noise as noise_lib
from flip_jax import sharding

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _fresh_rng():
  """Same draws per test whatever the xdist split or order."""
  global RNG  # pylint: disable=global-statement
  RNG = np.random.default_rng(0)


def _logsumexp(x, axis):
  m = np.max(x, axis=axis, keepdims=True)
  return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def _softplus(x):
  return np.logaddexp(0.0, x)


# ------------------------------------------------------------------ ICL
def _np_icl(z_r, z_t, tau, normalize):
  z_r, z_t = np.float64(z_r), np.float64(z_t)
  if normalize:
    z_r = z_r / np.linalg.norm(z_r, axis=1, keepdims=True)
    z_t = z_t / np.linalg.norm(z_t, axis=1, keepdims=True)
  s = z_r @ z_t.T / tau
  b = np.arange(len(s))
  rows = _logsumexp(s, 1) - s[b, b]
  cols = _logsumexp(s, 0) - s[b, b]
  return 0.5 * (rows.mean() + cols.mean()), s


@pytest.mark.parametrize("normalize", [False, True])
def test_icl_matches_numpy(normalize):
  z_r = RNG.normal(size=(8, 5)).astype(np.float32) * 3
  z_t = RNG.normal(size=(8, 5)).astype(np.float32) * 3
  loss, logits = losses.icl_loss(z_r, z_t, temperature=0.7,
                                 normalize=normalize)
  ref, s = _np_icl(z_r, z_t, 0.7, normalize)
  np.testing.assert_allclose(loss, ref, rtol=1e-5)
  np.testing.assert_allclose(logits, s, rtol=1e-5, atol=1e-5)


def test_icl_logits_are_raw_dot_products_without_normalize():
  z_r = RNG.normal(size=(4, 3)).astype(np.float32) * 10
  z_t = RNG.normal(size=(4, 3)).astype(np.float32) * 10
  _, logits = losses.icl_loss(z_r, z_t, temperature=0.5)
  np.testing.assert_allclose(logits, z_r @ z_t.T / 0.5, rtol=1e-5)
  assert np.max(np.abs(logits)) > 1 / 0.5  # not cosine similarities


def test_icl_separated_identical_towers_give_zero_loss_and_full_acc():
  z = 10.0 * np.eye(6, dtype=np.float32)
  loss, logits = losses.icl_loss(z, z)
  assert 0.0 <= float(loss) < 1e-6
  assert float(losses.icl_accuracy(logits)) == 1.0
  # A swapped pair makes two of six rows (and columns) wrong.
  perm = np.array([1, 0, 2, 3, 4, 5])
  _, logits = losses.icl_loss(z, z[perm])
  np.testing.assert_allclose(losses.icl_accuracy(logits), 4 / 6, rtol=1e-6)


def test_icl_bf16_inputs_compute_in_float32():
  z_r = RNG.normal(size=(4, 8)).astype(jnp.bfloat16)
  z_t = RNG.normal(size=(4, 8)).astype(jnp.bfloat16)
  loss, logits = losses.icl_loss(z_r, z_t)
  assert loss.dtype == jnp.float32 and logits.dtype == jnp.float32
  ref, _ = _np_icl(np.float32(z_r), np.float32(z_t), 0.7, False)
  np.testing.assert_allclose(loss, ref, rtol=1e-5)


@pytest.mark.multidevice
def test_icl_sharded_gradient_equals_unsharded_and_per_rank_form():
  """Global-batch gradient on 8 devices == single device; == code's ranks."""
  b, d, world = 16, 4, 8
  z_r = RNG.normal(size=(b, d)).astype(np.float32)
  z_t = RNG.normal(size=(b, d)).astype(np.float32)
  grad = jax.grad(lambda a, c: losses.icl_loss(a, c)[0], argnums=(0, 1))
  ref_r, ref_t = jax.jit(grad)(z_r, z_t)

  mesh = sharding.make_mesh((("data", -1), ("fsdp", 1), ("tensor", 1)))
  assert mesh.devices.size == world
  spec = NamedSharding(mesh, P("data", None))
  a, c = jax.device_put(z_r, spec), jax.device_put(z_t, spec)
  g_r, g_t = jax.jit(grad, out_shardings=(spec, spec))(a, c)
  assert len(g_r.sharding.device_set) == world
  np.testing.assert_allclose(g_r, ref_r, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(g_t, ref_t, rtol=1e-5, atol=1e-7)

  # Official per-rank form: gathered copies carry no gradient and the local
  # block comes first; every rank still sees the full B x B loss.
  per = b // world
  for rank in range(world):
    loc = slice(rank * per, (rank + 1) * per)
    order = np.r_[np.arange(b)[loc],
                  np.delete(np.arange(b), np.arange(b)[loc])]

    def rank_loss(lr, lt, rank_order=order, local=loc):
      # Constants (no gradient) except this rank's own rows.
      full_r = jnp.asarray(z_r).at[local].set(lr)[rank_order]
      full_t = jnp.asarray(z_t).at[local].set(lt)[rank_order]
      return losses.icl_loss(full_r, full_t)[0]

    gr, gt = jax.grad(rank_loss, argnums=(0, 1))(z_r[loc], z_t[loc])
    np.testing.assert_allclose(gr, ref_r[loc], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gt, ref_t[loc], rtol=1e-5, atol=1e-7)


def test_icl_rejects_bad_shapes_and_temperature():
  with pytest.raises(ValueError, match="towers"):
    losses.icl_loss(np.zeros((4, 3)), np.zeros((4, 2)))
  with pytest.raises(ValueError, match="temperature"):
    losses.icl_loss(np.zeros((4, 3)), np.zeros((4, 3)), temperature=0.0)


# ------------------------------------------------------------------ MLM
def _np_mlm(logits, labels, ignore=-100):
  x = np.float64(logits)
  logp = x - _logsumexp(x, -1)[..., None]
  valid = labels != ignore
  nll = -np.take_along_axis(logp, np.where(valid, labels, 0)[..., None],
                            -1)[..., 0]
  return np.sum(nll * valid) / max(valid.sum(), 1), int(valid.sum())


def test_mlm_masked_mean_matches_numpy_any_leading_shape():
  logits = RNG.normal(size=(3, 5, 11)).astype(np.float32) * 4
  labels = RNG.integers(0, 11, size=(3, 5))
  labels[RNG.random((3, 5)) < 0.6] = -100
  labels[0, 0] = 7  # at least one masked token
  loss, count = jax.jit(losses.mlm_loss)(logits, labels)
  ref, ref_count = _np_mlm(logits, labels)
  np.testing.assert_allclose(loss, ref, rtol=1e-5)
  assert int(count) == ref_count
  # bf16 logits: same result as f32 math on the rounded values.
  loss16, _ = losses.mlm_loss(logits.astype(jnp.bfloat16), labels)
  ref16, _ = _np_mlm(np.float32(logits.astype(jnp.bfloat16)), labels)
  assert loss16.dtype == jnp.float32
  np.testing.assert_allclose(loss16, ref16, rtol=1e-5)


def test_mlm_zero_masked_tokens_give_exact_zero_and_zero_grads():
  logits = RNG.normal(size=(2, 4, 9)).astype(np.float32)
  labels = np.full((2, 4), -100)
  (loss, count), grads = jax.value_and_grad(losses.mlm_loss, has_aux=True)(
      logits, labels)
  assert float(loss) == 0.0 and int(count) == 0
  assert np.all(np.asarray(grads) == 0.0)


def test_mlm_out_of_vocab_label_is_loud_nan():
  logits = np.zeros((1, 3, 5), np.float32)
  for bad in (5, -3):
    loss, _ = losses.mlm_loss(logits, np.array([[1, bad, -100]]))
    assert np.isnan(loss)
  with pytest.raises(ValueError, match="do not match"):
    losses.mlm_loss(logits, np.zeros((1, 4), np.int32))


def test_gather_masked_picks_masked_positions_in_order():
  b, length, h, vocab = 3, 7, 4, 13
  hidden = RNG.normal(size=(b, length, h)).astype(np.float32)
  labels = np.full((b, length), -100)
  labels[0, [1, 4, 6]] = [3, 5, 7]
  labels[1, [0]] = [2]
  hid_sel, lab_sel, valid, dropped = losses.gather_masked(
      hidden, labels, max_masked=3)
  assert hid_sel.shape == (b, 3, h) and lab_sel.shape == (b, 3)
  assert int(dropped) == 0
  for row in range(b):
    pos = np.flatnonzero(labels[row] != -100)
    n = len(pos)
    np.testing.assert_array_equal(valid[row], np.arange(3) < n)
    np.testing.assert_array_equal(lab_sel[row, :n], labels[row, pos])
    np.testing.assert_array_equal(lab_sel[row, n:], -100)
    np.testing.assert_array_equal(hid_sel[row, :n], hidden[row, pos])
  # MLM on gathered positions == MLM on every position (a linear "head").
  w = RNG.normal(size=(h, vocab)).astype(np.float32)
  full = losses.mlm_loss(hidden @ w, labels)
  sel = losses.mlm_loss(hid_sel @ w, lab_sel)
  np.testing.assert_allclose(sel[0], full[0], rtol=1e-6)
  assert int(sel[1]) == int(full[1]) == 4


def test_gather_masked_reports_overflow():
  labels = np.full((2, 6), -100)
  labels[0, :5] = 1
  labels[1, 2:5] = 2
  _, lab_sel, valid, dropped = losses.gather_masked(
      np.zeros((2, 6, 2), np.float32), labels, max_masked=2)
  assert int(dropped) == 3 + 1
  assert np.all(valid) and np.all(lab_sel == np.array([[1], [2]]))
  with pytest.raises(ValueError, match="max_masked"):
    losses.gather_masked(np.zeros((2, 6, 2)), labels, max_masked=7)


# ------------------------------------------------------- noise and NCE
COUNTS = np.array([0, 40, 10, 0, 25, 5, 0, 20], np.float64)  # 0s: reserved
OFFSETS, SIZES = np.array([0, 3]), np.array([3, 5])


def _np_log_q(counts):
  q = np.maximum(counts / counts.sum(), 1e-10)
  return np.log(q / q.sum())


def test_noise_log_probs_and_bias_init():
  log_q = np.asarray(noise_lib.noise_log_probs(COUNTS))
  pos = COUNTS > 0
  np.testing.assert_allclose(log_q[pos], np.log(COUNTS[pos] / COUNTS.sum()),
                             rtol=1e-6)
  assert np.all(np.isneginf(log_q[~pos]))
  bias = losses.nce_bias_init(COUNTS)
  np.testing.assert_allclose(bias, _np_log_q(COUNTS) + np.log(len(COUNTS)),
                             rtol=1e-5)
  assert np.all(np.isfinite(bias))
  for bad, msg in ((np.array([1.0, -1.0]), r"counts\[1\]"),
                   (np.zeros(3), "sum to 0"), (np.ones((2, 2)), "vector")):
    with pytest.raises(ValueError, match=msg):
      noise_lib.noise_log_probs(bad)


def test_nce_emb_init_is_uniform_in_bound_as_flax_initializer():

  class Table(nn.Module):

    @nn.compact
    def __call__(self):
      return self.param("emb", losses.nce_emb_init, (400, 16))

  emb = np.asarray(Table().init(jax.random.PRNGKey(0))["params"]["emb"])
  assert emb.shape == (400, 16) and np.abs(emb).max() <= 0.25
  np.testing.assert_allclose(emb.std(), 0.25 / math.sqrt(3), rtol=0.05)


_sample = jax.jit(noise_lib.sample_noise,
                  static_argnames=("shape", "block_size", "method"))
_sample_per_field = jax.jit(
    noise_lib.sample_noise_per_field,
    static_argnames=("num_samples", "block_size", "method"))


def _chi2(ids, probs, n):
  freq = np.bincount(np.asarray(ids).ravel(), minlength=len(probs))
  pos = probs > 0
  assert np.all(freq[~pos] == 0), "zero-probability id drawn"
  exp = n * probs[pos]
  return np.sum((freq[pos] - exp) ** 2 / exp), int(pos.sum()) - 1


@pytest.mark.parametrize("method,block_size", [
    ("cdf", None), ("cdf", 1), ("cdf", 3), ("cdf", 8), ("gumbel", 3)])
def test_sample_noise_frequencies_match_q(method, block_size):
  log_q = noise_lib.noise_log_probs(COUNTS)
  ids = _sample(jax.random.PRNGKey(1), log_q, (400, 10),
                block_size=block_size, method=method)
  assert ids.shape == (400, 10) and ids.dtype == jnp.int32
  stat, dof = _chi2(ids, COUNTS / COUNTS.sum(), 4000)
  assert stat < 25.0, (stat, dof)  # chi2(4): p ~ 5e-5
  # Trailing zero-count ids and a whole zero-mass block are never drawn.
  counts = np.array([5.0, 1.0, 0.0, 0.0, 0.0])
  ids = _sample(jax.random.PRNGKey(3), noise_lib.noise_log_probs(counts),
                (3000,), block_size=block_size or 2, method=method)
  stat, _ = _chi2(ids, counts / counts.sum(), 3000)
  assert stat < 20.0, stat


@pytest.mark.parametrize("method", ["cdf", "gumbel"])
def test_sample_noise_per_field_stays_in_field_with_conditional_q(method):
  log_q = noise_lib.noise_log_probs(COUNTS)
  fields = np.array([0, 1, 1, 0] * 250)
  ids = np.asarray(_sample_per_field(
      jax.random.PRNGKey(2), log_q, OFFSETS, SIZES, fields, num_samples=5,
      block_size=3, method=method))
  assert ids.shape == (1000, 5)
  lo, hi = OFFSETS[fields][:, None], (OFFSETS + SIZES)[fields][:, None]
  assert np.all((ids >= lo) & (ids < hi))
  cond = np.exp(np.asarray(noise_lib.field_conditional_log_probs(
      log_q, OFFSETS, SIZES)))
  for f in range(2):
    probs = np.where((np.arange(8) >= OFFSETS[f])
                     & (np.arange(8) < OFFSETS[f] + SIZES[f]), cond, 0.0)
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-6)
    stat, _ = _chi2(ids[fields == f], probs, ids[fields == f].size)
    assert stat < 25.0, (f, stat)


def _np_candidates(h, emb, bias, target, noise, log_q):
  ids = np.concatenate([target[..., None], noise], -1)
  s = (np.einsum("sd,skd->sk", np.float64(h), np.float64(emb)[ids])
       + np.float64(bias)[ids] - np.log(len(emb)))
  return s - np.maximum(np.float64(log_q)[ids], np.log(1e-10))


def _nce_case(s=6, d=4, k=5):
  log_q = np.asarray(noise_lib.noise_log_probs(COUNTS))
  h = RNG.normal(size=(s, d)).astype(np.float32)
  emb = RNG.normal(size=(len(COUNTS), d)).astype(np.float32)
  bias = RNG.normal(size=len(COUNTS)).astype(np.float32)
  target = np.array([1, 2, 4, 5, 7, 3])[:s]  # 3: zero-count target (clamp)
  noise = RNG.choice(np.flatnonzero(COUNTS), size=(s, k))
  weight = np.array([1, 0, 1, 1, 0, 1], np.float32)[:s]
  return h, emb, bias, target, noise, log_q, weight


def test_nce_scores_match_numpy():
  h, emb, bias, _, noise, _, _ = _nce_case()
  s = losses.nce_scores(h, emb, bias, noise)
  ref = (np.einsum("sd,skd->sk", h, emb[noise]) + bias[noise]
         - np.log(len(emb)))
  np.testing.assert_allclose(s, ref, rtol=1e-5, atol=1e-5)
  assert np.isnan(losses.nce_scores(h, emb, bias, noise * 0 - 1)).all()


def test_nce_loss_matches_numpy_with_zero_weights():
  h, emb, bias, target, noise, log_q, weight = _nce_case()
  loss, acc = jax.jit(losses.nce_loss)(h, emb, bias, target, noise, log_q,
                                       weight)
  ell = _np_candidates(h, emb, bias, target, noise, log_q) - np.log(5)
  per = _softplus(-ell[:, 0]) + _softplus(ell[:, 1:]).sum(-1)
  np.testing.assert_allclose(loss, (per * weight).sum() / weight.sum(),
                             rtol=1e-5)
  wins = np.argmax(ell, -1) == 0
  np.testing.assert_allclose(acc, (wins * weight).sum() / weight.sum())
  # All-padding batch: finite zero.
  zero, _ = losses.nce_loss(h, emb, bias, target, noise, log_q, 0 * weight)
  assert float(zero) == 0.0


def test_sampled_and_full_softmax_match_numpy():
  h, emb, bias, target, noise, log_q, weight = _nce_case()
  loss, acc = losses.sampled_softmax_loss(h, emb, bias, target, noise,
                                          log_q, weight)
  logits = _np_candidates(h, emb, bias, target, noise, log_q)
  per = _logsumexp(logits, -1) - logits[:, 0]
  np.testing.assert_allclose(loss, (per * weight).sum() / weight.sum(),
                             rtol=1e-5)
  wins = np.argmax(logits, -1) == 0
  np.testing.assert_allclose(acc, (wins * weight).sum() / weight.sum())

  loss, acc = losses.full_softmax_loss(h, emb, bias, target, weight)
  full = (np.float64(h) @ np.float64(emb).T + bias - np.log(len(emb)))
  per = _logsumexp(full, -1) - full[np.arange(len(h)), target]
  np.testing.assert_allclose(loss, (per * weight).sum() / weight.sum(),
                             rtol=1e-5)
  wins = np.argmax(full, -1) == target
  np.testing.assert_allclose(acc, (wins * weight).sum() / weight.sum())


def test_nce_accuracy_over_one_plus_k_candidates_known_answer():
  d = n = 4
  emb = np.eye(n, dtype=np.float32)
  bias = np.zeros(n, np.float32)
  log_q = np.log(np.full(n, 0.25, np.float32))
  h = np.array([[5, 0, 0, 0],    # target 0 scores 5, noise 0: win
                [0, 5, 0, 0],    # noise id 1 beats target 0: lose
                [0, 0, 1, 0],    # noise == target (tie): target wins
                [0, 0, 0, 9]],   # would win, but weight 0
               np.float32)
  target = np.array([0, 0, 2, 3])
  noise = np.array([[1, 2, 3], [1, 2, 3], [2, 2, 0], [0, 1, 2]])
  weight = np.array([1, 1, 1, 0], np.float32)
  for fn in (losses.nce_loss, losses.sampled_softmax_loss):
    _, acc = fn(h, emb, bias, target, noise, log_q, weight)
    np.testing.assert_allclose(acc, 2 / 3, rtol=1e-6)
  # The NCE logit subtracts log q: equal scores, but a frequent target
  # loses to a rare noise id.
  skew = np.log(np.array([0.7, 0.1, 0.1, 0.1], np.float32))
  _, acc = losses.nce_loss(np.zeros((1, d), np.float32), emb, bias,
                           np.array([0]), np.array([[1, 2]]), skew)
  assert float(acc) == 0.0


def test_nce_gradients_finite_for_zero_count_target_and_bf16():
  h, emb, bias, target, noise, log_q, weight = _nce_case()
  target, noise = target.copy(), noise.copy()
  target[weight == 0] = -1  # padding slots may carry any id
  noise[weight == 0] = 99
  args = (jnp.asarray(h, jnp.bfloat16), emb, bias)
  grads = jax.grad(
      lambda a, e, b: losses.nce_loss(a, e, b, target, noise, log_q,
                                      weight)[0],
      argnums=(0, 1, 2))(*args)
  assert grads[0].dtype == jnp.bfloat16
  for g in grads:
    assert np.all(np.isfinite(np.float32(g)))
  # Padding slots (weight 0) get no gradient on h.
  assert np.all(np.float32(grads[0])[weight == 0] == 0)
  for fn in (losses.sampled_softmax_loss, losses.nce_loss):
    g = jax.grad(lambda e, f=fn: f(h, e, bias, target, noise, log_q,
                                   weight)[0])(emb)
    assert np.all(np.isfinite(g))
  g = jax.grad(lambda e: losses.full_softmax_loss(h, e, bias, target,
                                                  weight)[0])(emb)
  assert np.all(np.isfinite(g))
  # A bad id in a *weighted* slot is loud.
  target[0] = len(COUNTS)
  assert np.isnan(losses.nce_loss(h, emb, bias, target, noise, log_q,
                                  weight)[0])
  assert np.isnan(losses.full_softmax_loss(h, emb, bias, target, weight)[0])


# ------------------------------------------------------------------ BCE
def _np_bce(x, y):
  x, y = np.float64(x), np.float64(y)
  return np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))


def test_bce_mean_sum_none_weight_match_numpy():
  x = RNG.normal(size=(7,)).astype(np.float32) * 3
  y = RNG.integers(0, 2, size=7).astype(np.float32)
  w = np.array([1, 1, 0, 2, 1, 0, 0.5], np.float32)
  per = _np_bce(x, y)
  np.testing.assert_allclose(losses.bce_with_logits(x, y), per.mean(),
                             rtol=1e-6)
  np.testing.assert_allclose(losses.bce_with_logits(x, y, w),
                             (per * w).sum() / w.sum(), rtol=1e-6)
  np.testing.assert_allclose(losses.bce_with_logits(x, y, w, "sum"),
                             (per * w).sum(), rtol=1e-6)
  np.testing.assert_allclose(losses.bce_with_logits(x, y, w, "none"),
                             per * w, rtol=1e-6)
  # BCE against a direct log-sigmoid formula (independent of the stable form).
  p = 1 / (1 + np.exp(-np.float64(x)))
  np.testing.assert_allclose(per, -(y * np.log(p) + (1 - y) * np.log1p(-p)),
                             rtol=1e-9)
  assert float(losses.bce_with_logits(x, y, 0 * w)) == 0.0
  with pytest.raises(ValueError, match="reduction"):
    losses.bce_with_logits(x, y, reduction="avg")
  with pytest.raises(ValueError, match="labels"):
    losses.bce_with_logits(x, y[:3])


def test_bce_is_stable_at_large_logits():
  x = np.array([100.0, -100.0, 100.0, -100.0], np.float32)
  y = np.array([1.0, 0.0, 0.0, 1.0], np.float32)
  val, grad = jax.value_and_grad(
      lambda a: losses.bce_with_logits(a, y, reduction="sum"))(x)
  np.testing.assert_allclose(val, 200.0, rtol=1e-6)
  np.testing.assert_allclose(grad, [0.0, 0.0, 1.0, -1.0], atol=1e-6)
  per = losses.bce_with_logits(x.astype(jnp.bfloat16), y, reduction="none")
  np.testing.assert_allclose(per, [0.0, 0.0, 100.0, 100.0], atol=1e-6)
