"""MTM noise distribution over global feature ids and its samplers (FLIP.md 5.4).

``q = c / sum(c)`` over the ``N`` global feature ids (counts ``c``, 2.8);
zero-count ids (reserved OOV/MASK) get ``log q = -inf`` and are never drawn
(FLIP.md 9, item 13). ``sample_noise`` draws from q (or its per-field
conditional, ``sample_noise_per_field``) in two levels, a block of about
sqrt(N) ids and then an id within it, instead of over all N ids at once. The NCE-family losses that
use these draws are in ``flip_jax.losses``.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def _f32(x):
  return jnp.asarray(x).astype(jnp.float32)


def check_counts(counts):
  """Host-side validation when counts are concrete (skipped under tracing)."""
  try:
    c = np.asarray(counts)
  except jax.errors.TracerArrayConversionError:
    return
  if c.ndim != 1 or c.size == 0:
    raise ValueError(f"counts must be a non-empty [N] vector, got {c.shape}")
  if not np.all(np.isfinite(c)) or np.any(c < 0):
    bad = int(np.flatnonzero(~np.isfinite(c) | (c < 0))[0])
    raise ValueError(f"counts must be finite and >= 0; counts[{bad}]={c[bad]}")
  if c.sum() <= 0:
    raise ValueError("counts sum to 0: no noise distribution")


def noise_log_probs(counts):
  """log q for the MTM noise, q = c / sum(c); zero-count ids get -inf.

  Args:
    counts: [N] non-negative feature counts (2.8).

  Returns:
    [N] float32 log q; ``-inf`` for zero-count (reserved) ids, which are
    therefore never sampled. Losses clamp it at log(1e-10) (module doc).
  """
  check_counts(counts)
  c = _f32(counts)
  return jnp.where(c > 0, jnp.log(c) - jnp.log(jnp.sum(c)), -jnp.inf)


def field_conditional_log_probs(log_q, field_offsets, field_sizes):
  """log q(j | field(j)) for the 'per_field' noise ablation (9, item 13).

  Ids are field-offset, so every id lies in exactly one field and this is one
  [N] vector: pass it to the MTM losses in place of ``log_q`` when the noise
  comes from ``sample_noise_per_field``, so the correction uses the
  distribution the noise was actually drawn from.

  Args:
    log_q: [N] global log q.
    field_offsets: [F] first global id of each field.
    field_sizes: [F] number of ids of each field.

  Returns:
    [N] float32; ids outside every field get -inf.
  """
  log_q = _f32(log_q)
  member = _field_membership(log_q.shape[0], field_offsets, field_sizes)
  masked = jnp.where(member, log_q[None, :], -jnp.inf)  # [F, N]
  log_mass = jax.nn.logsumexp(masked, axis=1, keepdims=True)  # [F, 1]
  ok = member & jnp.isfinite(log_mass)  # a zero-mass field stays -inf
  return jnp.max(jnp.where(ok, log_q[None] - log_mass, -jnp.inf), axis=0)


def _field_membership(num_ids, field_offsets, field_sizes):
  off = jnp.asarray(field_offsets, jnp.int32)[:, None]
  size = jnp.asarray(field_sizes, jnp.int32)[:, None]
  ids = jnp.arange(num_ids, dtype=jnp.int32)[None, :]
  return (ids >= off) & (ids < off + size)  # [F, N]


def _block_size(num_ids, block_size):
  if block_size is None:
    return max(1, math.isqrt(num_ids - 1) + 1)
  if not isinstance(block_size, int) or block_size < 1:
    raise ValueError(f"block_size must be a positive int, got {block_size!r}")
  return block_size


def _cdf_table(logits):
  """Per-row CDFs of log-weights [..., M] (-inf = zero mass).

  Returns:
    (cdf [..., M] unnormalised, last [...] index of the last positive entry).
    All-(-inf) rows get an all-zero cdf; the sampler never selects them.
  """
  m = jnp.max(logits, axis=-1, keepdims=True)
  p = jnp.exp(logits - jnp.where(jnp.isfinite(m), m, 0.0))
  last = logits.shape[-1] - 1 - jnp.argmax(jnp.flip(p > 0, axis=-1), axis=-1)
  return jnp.cumsum(p, axis=-1), last


def _cdf_draw(key, cdf, last, shape):
  """Inverse-CDF draw, one uniform per sample; cdf broadcasts to shape+[M]."""
  v = jax.random.uniform(key, shape) * cdf[..., -1]
  # First entry whose cdf exceeds v: zero-mass entries repeat the previous
  # cdf and are never chosen. Rounding can push v up to the total, so never
  # step past the last positive entry.
  idx = jnp.sum(cdf <= v[..., None], axis=-1, dtype=jnp.int32)
  return jnp.minimum(idx, last).astype(jnp.int32)


def _two_level_sample(rng, blocks, block_logits, shape, method, row=None):
  """Exact categorical draw as P(block) * P(id | block).

  A flat ``jax.random.categorical(log_q, shape)`` builds ``shape + [N]``
  Gumbel noise (about 1.3 GB and 20 s on CPU for 25.6k slots x 13k ids);
  splitting the ids into ~sqrt(N) blocks touches only ``shape + [sqrt(N)]``
  per level. ``method='cdf'`` (default) then draws one uniform per level
  against CDF tables built once per call ([.., nb] and [.., nb, block]),
  instead of sqrt(N) Gumbels per level (random bits dominate the cost);
  ``'gumbel'`` uses ``jax.random.categorical`` at both levels. Per-level
  probabilities are ~sqrt(N) times larger than the flat ones, which keeps
  rare ids above float32 resolution in both methods.

  Args:
    rng: PRNG key.
    blocks: [nb, block] (or [F, nb, block] with ``row``) log q, -inf padded.
    block_logits: logsumexp of ``blocks`` over its last axis.
    shape: sample shape.
    method: 'cdf' or 'gumbel'.
    row: optional int array of ``shape``: the leading ([F]) row per sample.

  Returns:
    int32 global ids of ``shape``.
  """
  if method not in ("cdf", "gumbel"):
    raise ValueError(f"noise sampling method must be 'cdf' or 'gumbel', "
                     f"got {method!r}")
  k_block, k_within = jax.random.split(rng)
  if method == "cdf":
    cdf1, last1 = _cdf_table(block_logits)
    cdf2, last2 = _cdf_table(blocks)
    if row is None:
      b = _cdf_draw(k_block, cdf1, last1, shape)
      w = _cdf_draw(k_within, cdf2[b], last2[b], shape)
    else:
      b = _cdf_draw(k_block, cdf1[row], last1[row], shape)
      w = _cdf_draw(k_within, cdf2[row, b], last2[row, b], shape)
  else:
    if row is None:
      b = jax.random.categorical(k_block, block_logits, shape=shape)
    else:
      b = jax.random.categorical(k_block, block_logits[row], axis=-1)
    inner = blocks[b] if row is None else blocks[row, b]  # shape + [block]
    w = jax.random.categorical(k_within, inner, axis=-1)
  return (b * blocks.shape[-1] + w).astype(jnp.int32)


def _blocked(log_q, block):
  n = log_q.shape[-1]
  nb = -(-n // block)
  pad = [(0, 0)] * (log_q.ndim - 1) + [(0, nb * block - n)]
  padded = jnp.pad(log_q, pad, constant_values=-jnp.inf)
  return padded.reshape(log_q.shape[:-1] + (nb, block))


def sample_noise(rng, log_q, shape, *, block_size=None, method="cdf"):
  """i.i.d. noise ids from the global q (exact two-level categorical).

  Args:
    rng: PRNG key.
    log_q: [N] log q (``-inf`` ids are never drawn).
    shape: output shape, e.g. (S, K).
    block_size: ids per block of the two-level draw (default ceil(sqrt N)).
    method: 'cdf' (inverse CDF, fast) or 'gumbel' (jax.random.categorical).

  Returns:
    int32 ids of ``shape`` in [0, N).
  """
  log_q = _f32(log_q)
  blocks = _blocked(log_q, _block_size(log_q.shape[0], block_size))
  block_logits = jax.nn.logsumexp(blocks, axis=-1)  # [nb]
  return _two_level_sample(rng, blocks, block_logits, tuple(shape), method)


def sample_noise_per_field(rng, log_q, field_offsets, field_sizes, fields,
                           num_samples, *, block_size=None, method="cdf"):
  """Noise restricted to each slot's own field ('per_field' ablation).

  Args:
    rng: PRNG key.
    log_q: [N] global log q.
    field_offsets: [F] first global id of each field.
    field_sizes: [F] ids per field.
    fields: int [...] field index of each slot's target.
    num_samples: K negatives per slot.
    block_size, method: as in ``sample_noise``.

  Returns:
    int32 ids [..., K], each drawn from q restricted to its slot's field.
  """
  log_q = _f32(log_q)
  member = _field_membership(log_q.shape[0], field_offsets, field_sizes)
  per_field = jnp.where(member, log_q[None], -jnp.inf)  # [F, N]
  blocks = _blocked(per_field, _block_size(log_q.shape[0], block_size))
  block_logits = jax.nn.logsumexp(blocks, axis=-1)  # [F, nb]
  row = jnp.broadcast_to(jnp.asarray(fields, jnp.int32)[..., None],
                         jnp.shape(fields) + (num_samples,))
  return _two_level_sample(rng, blocks, block_logits, row.shape, method,
                           row=row)
