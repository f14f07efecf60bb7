"""FLIP losses: ICL (5.3), MTM NCE family (5.4), MLM (5.5), BCE (6.x).

Every function is pure ``jnp``, jit-able and does its arithmetic in float32
even when its inputs are bfloat16 (gradients flow back through the casts).
Section numbers refer to ``FLIP.md``.

MTM id space: ``N`` global feature ids with a count vector ``c`` (2.8). The
noise distribution is ``q = c / sum(c)``. The official code clamps ``q`` at
1e-10 and renormalises, so reserved OOV/MASK ids (count 0) keep a tiny mass
and can, in principle, be drawn. Here ``noise.noise_log_probs`` gives zero-count ids
``log q = -inf`` so they are *never* sampled (FLIP.md 9, item 13), while the
losses read ``max(log q, log 1e-10)`` so a zero-count target still gives the
official, finite correction, and ``nce_bias_init`` keeps the official clamp
(finite bias; ``-inf`` would turn into NaN under weight decay).
"""
from __future__ import annotations

import math
import jax
import jax.numpy as jnp

from flip_jax import noise

# Back-off probability of the official NCE code (clamp on q).
BACKOFF_PROB = 1e-10
_LOG_BACKOFF = math.log(BACKOFF_PROB)
_REDUCTIONS = ("mean", "sum", "none")


def _f32(x):
  return jnp.asarray(x).astype(jnp.float32)


def _take(table, ids, axis=0):
  """Gathers ``table`` rows at ``ids``; any id outside [0, n) reads NaN.

  Negative ids would otherwise wrap around (NumPy semantics) and large ones
  clip, silently training on the wrong row; NaN trips the trainer's
  non-finite check instead.
  """
  n = table.shape[axis]
  ids = jnp.asarray(ids, jnp.int32)
  ok = (ids >= 0) & (ids < n)
  out = jnp.take(table, jnp.where(ok, ids, 0), axis=axis)
  ok = ok.reshape(ok.shape + (1,) * (out.ndim - ok.ndim))
  return jnp.where(ok, out, jnp.nan)


def weight_denominator(weight) -> jax.Array:
  """sum(w), or 1 when it is 0: what the weighted means here divide by.

  A micro-batched step divides the sums of its micro-batches by this value
  of the global batch, which gives the same means.
  """
  total = jnp.sum(_f32(weight))
  return jnp.where(total > 0, total, 1.0)


def _weighted_mean(values, weight, denominator=None):
  """sum(w * v) / sum(w), with 0 (not NaN) when every weight is zero.

  ``denominator`` replaces sum(w): a micro-batch passes the global batch's
  ``weight_denominator`` so that its terms add up to the global mean.
  """
  if weight is None:
    weight = jnp.ones_like(values)
  weight = _f32(weight)
  if weight.shape != values.shape:
    raise ValueError(
        f"weight shape {weight.shape} != per-slot shape {values.shape}")
  denom = (weight_denominator(weight) if denominator is None
           else _f32(denominator))
  # where() (not w * v) so a NaN/inf in a padding slot cannot leak through.
  return jnp.sum(jnp.where(weight != 0, weight * values, 0.0)) / denom


# ------------------------------------------------------------------ ICL (5.3)
def icl_loss(z_r, z_t, *, temperature=0.7, normalize=False):
  """Symmetric InfoNCE between the ID and text towers over the global batch.

  ``S = z_r @ z_t.T / tau``; positives on the diagonal;
  ``loss = (CE over rows + CE over columns) / 2``, each a mean over B. The
  inputs are the *global* [B, d] arrays (they may be sharded over devices;
  jit inserts the collectives, and gradients reach every row and column).

  Args:
    z_r: [B, d] ID-side projections.
    z_t: [B, d] text-side projections.
    temperature: tau (fixed 0.7 in the official code).
    normalize: L2-normalise both towers first (ablation; the official code
      does not, so the logits are raw dot products / tau).

  Returns:
    (loss scalar float32, logits [B, B] float32); logits feed ``icl_accuracy``.
  """
  z_r, z_t = _f32(z_r), _f32(z_t)
  if z_r.ndim != 2 or z_r.shape != z_t.shape:
    raise ValueError(f"icl_loss: need equal [B, d] towers, got {z_r.shape} "
                     f"and {z_t.shape}")
  if temperature <= 0:
    raise ValueError(f"icl_loss: temperature must be > 0, got {temperature}")
  if normalize:
    z_r = z_r * jax.lax.rsqrt(
        jnp.maximum(jnp.sum(z_r * z_r, -1, keepdims=True), 1e-24))
    z_t = z_t * jax.lax.rsqrt(
        jnp.maximum(jnp.sum(z_t * z_t, -1, keepdims=True), 1e-24))
  logits = z_r @ z_t.T / temperature  # [B, B]
  diag = jnp.diagonal(logits)
  row_ce = jax.nn.logsumexp(logits, axis=1) - diag   # ID -> text
  col_ce = jax.nn.logsumexp(logits, axis=0) - diag   # text -> ID
  return 0.5 * (jnp.mean(row_ce) + jnp.mean(col_ce)), logits


def icl_accuracy(logits):
  """Mean of row-wise and column-wise top-1 retrieval accuracy.

  Args:
    logits: [B, B] from ``icl_loss`` (positives on the diagonal).

  Returns:
    Scalar float32 in [0, 1]; ties go to the lowest index (argmax).
  """
  idx = jnp.arange(logits.shape[0])
  row = jnp.mean(jnp.argmax(logits, axis=1) == idx)
  col = jnp.mean(jnp.argmax(logits, axis=0) == idx)
  return 0.5 * (row + col).astype(jnp.float32)


# ------------------------------------------------------------------ MLM (5.5)
def mlm_loss(logits, labels, *, ignore_index=-100, denominator=None):
  """Cross-entropy over masked positions, masked mean with max(count, 1).

  Args:
    logits: [..., V] (any leading shape; any float dtype, computed in f32).
    labels: [...] int token ids; ``ignore_index`` marks unmasked positions.
      Any other label outside [0, V) makes the loss NaN, so the trainer's
      non-finite check fails loudly instead of training on a clipped id.
    ignore_index: label value of positions that do not count.
    denominator: replaces max(count, 1) (a micro-batch passes the global
      batch's count, so that its terms add up to the global mean).

  Returns:
    (loss scalar float32, num_masked scalar int32). With no masked position
    the loss is exactly 0 and its gradient is zero (FLIP.md 9, item 11).
  """
  labels = jnp.asarray(labels)
  if logits.shape[:-1] != labels.shape:
    raise ValueError(f"mlm_loss: logits {logits.shape} do not match labels "
                     f"{labels.shape} + [V]")
  logp = jax.nn.log_softmax(_f32(logits), axis=-1)
  valid = labels != ignore_index
  safe = jnp.where(valid, labels, 0).astype(jnp.int32)
  in_vocab = (labels >= 0) & (labels < logits.shape[-1])
  picked = jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
  picked = jnp.where(in_vocab | ~valid, picked, jnp.nan)
  count = jnp.sum(valid, dtype=jnp.int32)
  total = jnp.sum(jnp.where(valid, -picked, 0.0))
  if denominator is None:
    denominator = jnp.maximum(count, 1)
  return total / _f32(denominator), count


def gather_masked(hidden, labels, max_masked, *, ignore_index=-100):
  """Static-shape selection of masked positions for the fast MLM head.

  Keeps, per example (row), the first ``max_masked`` positions whose label is
  not ``ignore_index``, in increasing position order. Rows with fewer masked
  positions are padded (``valid`` False, label ``ignore_index``); positions
  beyond the first ``max_masked`` of a row are *dropped* from the loss and
  counted in ``num_dropped`` so the caller can log it (choose K as the
  largest per-row masked count of the data to keep it at 0).

  Args:
    hidden: [B, L, H] token states of the masked pass.
    labels: [B, L] MLM labels.
    max_masked: K, a static Python int with 1 <= K <= L.
    ignore_index: label of unmasked positions.

  Returns:
    (hidden_sel [B, K, H], labels_sel [B, K], valid [B, K] bool,
     num_dropped scalar int32). ``mlm_loss(head(hidden_sel), labels_sel)``
     equals the full-sequence loss whenever ``num_dropped == 0``.
  """
  hidden, labels = jnp.asarray(hidden), jnp.asarray(labels)
  if hidden.ndim != 3 or labels.shape != hidden.shape[:2]:
    raise ValueError(f"gather_masked: need hidden [B, L, H] and labels "
                     f"[B, L], got {hidden.shape} and {labels.shape}")
  length = labels.shape[1]
  if not isinstance(max_masked, int) or not 1 <= max_masked <= length:
    raise ValueError(f"gather_masked: max_masked must be an int in "
                     f"[1, {length}], got {max_masked!r}")
  mask = labels != ignore_index
  pos = jnp.arange(length, dtype=jnp.int32)
  # Masked positions score in (0, L], earliest highest; the rest score <= 0.
  score = jnp.where(mask, length - pos, -pos)
  _, idx = jax.lax.top_k(score, max_masked)  # [B, K]
  valid = jnp.take_along_axis(mask, idx, axis=1)
  labels_sel = jnp.where(valid, jnp.take_along_axis(labels, idx, axis=1),
                         jnp.asarray(ignore_index, labels.dtype))
  hidden_sel = jnp.take_along_axis(hidden, idx[..., None], axis=1)
  per_row = jnp.sum(mask, axis=1, dtype=jnp.int32)
  num_dropped = jnp.sum(jnp.maximum(per_row - max_masked, 0))
  return hidden_sel, labels_sel, valid, num_dropped


# ----------------------------------------------------- MTM NCE family (5.4)
def nce_bias_init(counts):
  """Output-bias init ``log q + log N`` with the official 1e-10 clamp.

  Args:
    counts: [N] feature counts.

  Returns:
    [N] float32 (finite for zero-count ids: log(1e-10 / Z) + log N).
  """
  noise.check_counts(counts)
  c = _f32(counts)
  q = jnp.maximum(c / jnp.sum(c), BACKOFF_PROB)
  return jnp.log(q / jnp.sum(q)) + math.log(c.shape[0])


def nce_emb_init(key, shape, dtype=jnp.float32):
  """Flax initializer: U(-1/sqrt(d), 1/sqrt(d)) for the [N, d] output table."""
  bound = 1.0 / math.sqrt(shape[-1])
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def nce_scores(h, out_emb, out_bias, ids):
  """s(j) = <h, E_j> + b_j - log N on gathered rows (no [S, N] matrix).

  Args:
    h: [..., d] decoded slot states.
    out_emb: [N, d] output embeddings.
    out_bias: [N] output bias.
    ids: [..., k] global ids per slot (out-of-range ids give NaN).

  Returns:
    [..., k] float32 scores.
  """
  num_ids = out_emb.shape[0]
  rows = _take(_f32(out_emb), ids)  # [..., k, d]
  bias = _take(_f32(out_bias), ids)
  return (jnp.einsum("...d,...kd->...k", _f32(h), rows) + bias
          - math.log(num_ids))


def _padding_safe(ids, weight, extra_dims=0):
  """Points the ids of weight-0 slots at row 0.

  Padding slots may carry any id (e.g. -1); reading NaN there would be
  masked out of the loss but still poison the gradient (0 * NaN).
  """
  ids = jnp.asarray(ids, jnp.int32)
  if weight is None:
    return ids
  keep = jnp.asarray(weight) != 0
  return jnp.where(keep.reshape(keep.shape + (1,) * extra_dims), ids, 0)


def _candidates(h, out_emb, out_bias, target, noise, log_q, weight):
  """s - log q over [target, noise_1..K] (target at index 0)."""
  h, target, noise = jnp.asarray(h), jnp.asarray(target), jnp.asarray(noise)
  if noise.shape[:-1] != target.shape or h.shape[:-1] != target.shape:
    raise ValueError(f"MTM loss: h {h.shape}, target {target.shape} and "
                     f"noise {noise.shape} must share leading dims")
  ids = jnp.concatenate([target[..., None], noise], axis=-1)
  ids = _padding_safe(ids, weight, extra_dims=1)
  s = nce_scores(h, out_emb, out_bias, ids)  # [..., 1+K]
  lq = jnp.maximum(_take(_f32(log_q), ids), _LOG_BACKOFF)
  return s - lq


def _target_wins(logits):
  """Target (index 0) has the largest logit; ties go to the target."""
  return (jnp.argmax(logits, axis=-1) == 0).astype(jnp.float32)


def nce_loss(h, out_emb, out_bias, target, noise, log_q, weight=None,
             denominator=None):
  """Binary NCE (official default ``pt_loss='nce'``).

  ``l(j) = s(j) - log q_j - log K``; per slot
  ``softplus(-l(target)) + sum_k softplus(l(noise_k))``.

  Args:
    h: [..., d] slot states; out_emb [N, d]; out_bias [N].
    target: [...] true ids; noise: [..., K] noise ids.
    log_q: [N] log of the distribution the noise came from (clamped at
      log 1e-10 here).
    weight: [...] slot weights (0 = padding, excluded); None = all ones.
    denominator: replaces sum(w) in both means (micro-batches pass the
      global batch's ``weight_denominator``).

  Returns:
    (loss, acc): weighted means over slots (denominator sum(w), 0 if all
    weights are 0); acc = target has the largest l among its 1+K candidates.
  """
  k = noise.shape[-1]
  if k < 1:
    raise ValueError(f"nce_loss: need at least one noise id, got {noise.shape}")
  ell = _candidates(h, out_emb, out_bias, target, noise, log_q,
                    weight) - math.log(k)
  per_slot = (jax.nn.softplus(-ell[..., 0])
              + jnp.sum(jax.nn.softplus(ell[..., 1:]), axis=-1))
  return (_weighted_mean(per_slot, weight, denominator),
          _weighted_mean(_target_wins(ell), weight, denominator))


def sampled_softmax_loss(h, out_emb, out_bias, target, noise, log_q,
                         weight=None, denominator=None):
  """Sampled softmax: CE over [s - log q] of target (index 0) and K noise.

  Arguments and returns as in ``nce_loss``.
  """
  logits = _candidates(h, out_emb, out_bias, target, noise, log_q, weight)
  per_slot = jax.nn.logsumexp(logits, axis=-1) - logits[..., 0]
  return (_weighted_mean(per_slot, weight, denominator),
          _weighted_mean(_target_wins(logits), weight, denominator))


def full_softmax_loss(h, out_emb, out_bias, target, weight=None,
                      denominator=None):
  """Exact softmax CE over all N ids (materialises [..., N] scores).

  Args:
    h: [..., d]; out_emb [N, d]; out_bias [N]; target [...]; weight [...];
    denominator as in ``nce_loss``.

  Returns:
    (loss, acc) weighted means over slots; acc = argmax over N is the target.
  """
  h = jnp.asarray(h)
  if h.shape[:-1] != jnp.shape(target):
    raise ValueError(f"full_softmax_loss: h {h.shape} vs target "
                     f"{target.shape}")
  num_ids = out_emb.shape[0]
  logits = (_f32(h) @ _f32(out_emb).T + _f32(out_bias)
            - math.log(num_ids))  # [..., N]
  target = _padding_safe(target, weight)
  ok = (target >= 0) & (target < num_ids)
  tgt = jnp.take_along_axis(logits, jnp.where(ok, target, 0)[..., None],
                            axis=-1)[..., 0]
  tgt = jnp.where(ok, tgt, jnp.nan)
  per_slot = jax.nn.logsumexp(logits, axis=-1) - tgt
  acc = (jnp.argmax(logits, axis=-1) == target).astype(jnp.float32)
  return (_weighted_mean(per_slot, weight, denominator),
          _weighted_mean(acc, weight, denominator))


# ------------------------------------------------------------------ BCE (6.x)
def bce_with_logits(logits, labels, weight=None, reduction="mean"):
  """Numerically stable binary cross-entropy on logits.

  ``max(x, 0) - x*y + log1p(exp(-|x|))`` stays finite for |x| = 100 and more.

  Args:
    logits: [...] logits (any float dtype; f32 math).
    labels: [...] targets in [0, 1].
    weight: [...] per-example weights; 0 marks padding rows. None = ones.
    reduction: 'mean' (sum(w*l)/sum(w), 0 when sum(w) = 0), 'sum' (the
      FLIP_ID recipe, 6.1) or 'none' (per-example w*l).

  Returns:
    Scalar float32 ('mean'/'sum') or [...] ('none').
  """
  if reduction not in _REDUCTIONS:
    raise ValueError(f"bce_with_logits: reduction must be one of "
                     f"{_REDUCTIONS}, got {reduction!r}")
  x, y = _f32(logits), _f32(labels)
  if x.shape != y.shape:
    raise ValueError(f"bce_with_logits: logits {x.shape} vs labels {y.shape}")
  per = jnp.maximum(x, 0.0) - x * y + jnp.log1p(jnp.exp(-jnp.abs(x)))
  if reduction == "mean":
    return _weighted_mean(per, weight)
  w = jnp.ones_like(per) if weight is None else _f32(weight)
  if w.shape != per.shape:
    raise ValueError(f"bce_with_logits: weight {w.shape} vs {per.shape}")
  per = jnp.where(w != 0, w * per, 0.0)
  return per if reduction == "none" else jnp.sum(per)
