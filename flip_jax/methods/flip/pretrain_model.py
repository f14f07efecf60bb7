"""The FLIP pretraining model: ID backbone + PLM + the three alignment heads.

One linen module, ``FlipPretrainModel``, whose ``__call__`` runs every forward
pass one pretraining step needs and returns the three losses (FLIP.md 5):

* ICL: symmetric InfoNCE between ``ctr_proj(E_ID(ids))`` and
  ``txt_proj(PLM(text)[:, 0])`` over the *global* batch (the batch axis is
  sharded over devices; jit inserts the collectives, gradients flow through
  every row and column).
* MTM: the masked ID representation queries the unmasked token states with a
  single-query attention (padding masked, FLIP.md 9 item 3); a field decoder
  predicts the masked fields' ids, trained with NCE over global feature ids.
* MLM: the masked text's token states, concatenated with the unmasked ID
  representation, predict the masked tokens.

Submodule names follow STYLE.md: ``ctr``, ``plm``, ``ctr_proj``, ``txt_proj``,
``mtm_head``, ``mlm_head``, ``nce``. Only the submodules of enabled losses are
created (linen creates parameters on first use).

Two efficiency switches, fast form by default (flip_jax), official form for
comparison:
* ``mlm_masked_only``: the MLM head runs on (at most ``mlm_max_masked``) masked
  positions per row instead of all B x L positions.
* ``share_unmasked_pass``: one unmasked PLM pass feeds ICL's [CLS] and MTM's
  token states instead of two passes (FLIP.md 5.2, 9 item 23).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from flip_jax import losses
from flip_jax import noise as noise_lib
from flip_jax.models import ctr as ctr_lib
from flip_jax.models import plm as plm_lib
from flip_jax.models.layers import TorchDense

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class FlipConfig:
  """Static configuration of the pretraining model (frozen from the config)."""
  ctr: Any                      # ctr_lib.CTRConfig
  plm: Any                      # plm_lib.PLMConfig
  num_features: int
  num_fields: int
  proj_dim: int = 128
  proj_dropout: float = 0.2
  icl_enabled: bool = True
  icl_weight: float = 0.125
  icl_temperature: float = 0.7
  icl_normalize: bool = False
  mlm_enabled: bool = True
  mlm_weight: float = 1.0
  mlm_head_dropout: float = 0.2
  mlm_masked_only: bool = True
  mlm_max_masked: int = 32
  mtm_enabled: bool = True
  mtm_weight: float = 1.0
  mtm_loss: str = "nce"          # nce | sampled | full
  mtm_num_negatives: int = 25
  mtm_noise: str = "global"      # global | per_field
  mtm_attn_padding_mask: bool = True
  mtm_attn_scale: float | None = None
  mtm_field_dim: int = 32
  share_unmasked_pass: bool = True
  dtype: Any = jnp.float32       # compute dtype of the PLM and the heads
  plm_remat: bool = False


def _dense(features, names, name, dtype, use_bias=True):
  """Linear layer initialised like torch.nn.Linear, with logical axes."""
  return TorchDense(features, use_bias=use_bias, axes=names, dtype=dtype,
                    name=name)


class ProjectionHead(nn.Module):
  """in -> 128 -> GELU -> 128 -> dropout -> LayerNorm(h + p) (FLIP.md 5.3)."""
  dim: int = 128
  dropout: float = 0.2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, deterministic: bool):
    p = _dense(self.dim, ("hidden", "proj"), "dense_in", self.dtype)(x)
    h = _dense(self.dim, ("proj_in", "proj"), "dense_out", self.dtype)(
        nn.gelu(p, approximate=False))
    h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
    return nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32, name="norm")(h + p)


class MtmHead(nn.Module):
  """Single-query read-out over token states, then the field decoder."""
  hidden: int
  num_fields: int
  field_dim: int
  padding_mask: bool = True
  attn_scale: float | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, r_masked, tokens, attention_mask):
    # r_masked [B, D_r]; tokens [B, L, H]; attention_mask [B, L]
    q = _dense(self.hidden, ("hidden", "embed"), "query", self.dtype)(r_masked)
    q = nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32, name="query_norm")(q)
    scores = jnp.einsum("bh,blh->bl", q.astype(jnp.float32),
                        tokens.astype(jnp.float32))
    if self.attn_scale is not None:
      scores = scores * self.attn_scale
    if self.padding_mask:
      scores = jnp.where(attention_mask > 0, scores, -1e30)
    attn = jax.nn.softmax(scores, axis=-1)
    context = jnp.einsum("bl,blh->bh", attn, tokens.astype(jnp.float32))
    u = jnp.concatenate([r_masked.astype(jnp.float32), context], axis=-1)
    dec = _dense(self.num_fields * self.field_dim, ("hidden_in", "hidden"),
                 "decoder", self.dtype)(u)
    return dec.reshape(dec.shape[0], self.num_fields, self.field_dim)


class NceTable(nn.Module):
  """Output embeddings Ê [N, d] and bias b [N] over global feature ids."""
  num_features: int
  dim: int

  def setup(self):
    self.embedding = self.param(
        "embedding",
        nn.with_logical_partitioning(losses.nce_emb_init,
                                     ("feature_vocab", "feature_embed")),
        (self.num_features, self.dim), jnp.float32)
    # Overwritten with losses.nce_bias_init(counts) by the trainer.
    self.bias = self.param(
        "bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                             ("feature_vocab",)),
        (self.num_features,), jnp.float32)

  def __call__(self):
    return self.embedding, self.bias


class MlmHead(nn.Module):
  """[token ; r] -> Linear(H) -> tanh -> dropout -> Linear(V) (FLIP.md 5.5)."""
  hidden: int
  vocab_size: int
  dropout: float = 0.2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, deterministic: bool):
    h = jnp.tanh(_dense(self.hidden, ("hidden", "embed"), "dense", self.dtype)(x))
    h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
    return _dense(self.vocab_size, ("embed", "vocab"), "decoder", self.dtype)(h)


def _gather_rows(x, idx):
  """x [B, L, ...], idx [B, K] -> [B, K, ...]."""
  return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)),
                             axis=1)


class FlipPretrainModel(nn.Module):
  """Joint pretraining model; ``__call__`` returns losses and metrics."""
  config: FlipConfig

  def setup(self):
    cfg = self.config
    self.ctr = ctr_lib.build(cfg.ctr)
    self.plm = plm_lib.PLMEncoder(cfg.plm, dtype=cfg.dtype,
                                  remat=cfg.plm_remat)
    if cfg.icl_enabled:
      self.ctr_proj = ProjectionHead(cfg.proj_dim, cfg.proj_dropout, cfg.dtype)
      self.txt_proj = ProjectionHead(cfg.proj_dim, cfg.proj_dropout, cfg.dtype)
    if cfg.mtm_enabled:
      self.mtm_head = MtmHead(cfg.plm.hidden_size, cfg.num_fields,
                              cfg.mtm_field_dim, cfg.mtm_attn_padding_mask,
                              cfg.mtm_attn_scale, cfg.dtype)
      self.nce = NceTable(cfg.num_features, cfg.mtm_field_dim)
    if cfg.mlm_enabled:
      self.mlm_head = MlmHead(cfg.plm.hidden_size, cfg.plm.vocab_size,
                              cfg.mlm_head_dropout, cfg.dtype)

  def _views(self, batch, deterministic: bool):
    """The unmasked ID representation, unmasked PLM pass and ICL views.

    Shared by ``__call__`` and ``icl_views`` so that both draw the same
    dropout keys in the same order (the micro-batched step recomputes these
    views and needs them identical).
    """
    cfg = self.config
    need_r = cfg.icl_enabled or cfg.mlm_enabled
    r = self.ctr.encode(batch["ids"], deterministic=deterministic) if need_r else None
    unmasked = z_r = z_t = None
    if cfg.icl_enabled or (cfg.mtm_enabled and cfg.share_unmasked_pass):
      unmasked = self.plm(batch["input_ids"], batch["attention_mask"],
                          deterministic=deterministic)
    if cfg.icl_enabled:
      z_r = self.ctr_proj(r, deterministic=deterministic)
      z_t = self.txt_proj(unmasked["cls"], deterministic=deterministic)
      z_r = nn.with_logical_constraint(z_r, ("batch", None))
      z_t = nn.with_logical_constraint(z_t, ("batch", None))
    return r, unmasked, z_r, z_t

  def icl_views(self, batch: dict[str, Array], *,
                deterministic: bool = True) -> tuple[Array, Array]:
    """(z_r, z_t) [B, proj_dim]: the two ICL views of a (micro-)batch."""
    _, _, z_r, z_t = self._views(batch, deterministic)
    return z_r, z_t

  def __call__(self, batch: dict[str, Array], consts: dict[str, Array], *,
               deterministic: bool = True,
               icl_cotangents: tuple[Array, Array] | None = None,
               norms: dict[str, Array] | None = None) -> dict[str, Array]:
    """Runs the enabled losses.

    Args:
      batch: the global batch (see flip_jax.data.pipeline for the keys).
      consts: ``log_q`` [N] (noise log-probabilities) and, for the per-field
        noise, ``field_offsets`` / ``field_sizes`` [F].
      deterministic: disables dropout.
      icl_cotangents: micro-batch mode. ``batch`` is one micro-batch of a
        global batch; (g_r, g_t) are the ICL weight times d ICL / d (z_r, z_t)
        on its rows, computed on the global batch. ICL then enters ``loss``
        as sum(g_r * z_r) + sum(g_t * z_t), whose gradient is this
        micro-batch's share of the global ICL gradient.
      norms: micro-batch mode: ``loss_norms`` of the global batch. MTM and
        MLM terms (and their metrics) become this micro-batch's share of the
        global means, so that summing over micro-batches gives the global
        values.

    Returns:
      Dict with ``loss`` (weighted total) and unweighted terms / metrics.
    """
    cfg = self.config
    out: dict[str, Array] = {}
    total = jnp.zeros((), jnp.float32)
    r, unmasked, z_r, z_t = self._views(batch, deterministic)

    # ---------------------------------------------------------------- ICL
    if cfg.icl_enabled and icl_cotangents is not None:
      for g, z in zip(icl_cotangents, (z_r, z_t)):
        total = total + jnp.sum(jax.lax.stop_gradient(g)
                                * z.astype(jnp.float32))
    elif cfg.icl_enabled:
      icl, logits = losses.icl_loss(z_r, z_t, temperature=cfg.icl_temperature,
                                    normalize=cfg.icl_normalize)
      out["icl_loss"] = icl
      out["icl_acc"] = losses.icl_accuracy(logits)

    # ---------------------------------------------------------------- MTM
    if cfg.mtm_enabled:
      if cfg.share_unmasked_pass:
        tokens = unmasked["last_hidden_state"]
      else:  # the official form: a second unmasked pass (own dropout).
        tokens = self.plm(batch["input_ids"], batch["attention_mask"],
                          deterministic=deterministic)["last_hidden_state"]
      r_masked = self.ctr.encode(batch["mtm_ids"], deterministic=deterministic)
      dec = self.mtm_head(r_masked, tokens, batch["attention_mask"])  # [B,F,d]
      h = _gather_rows(dec, batch["mtm_positions"])                    # [B,M,d]
      h = h.reshape(-1, h.shape[-1]).astype(jnp.float32)
      target = batch["mtm_labels"].reshape(-1)
      weight = batch["mtm_weight"].reshape(-1)
      emb, bias = self.nce()
      # Micro-batch mode: divided by the global batch's denominator, so that
      # the micro-batches' terms add up to the global means.
      denom = None if norms is None else norms["mtm"]
      if cfg.mtm_loss == "full":
        mtm, acc = losses.full_softmax_loss(h, emb, bias, target, weight,
                                            denom)
      else:
        noise = self._noise(target.shape[0], batch, consts)
        fn = (losses.nce_loss if cfg.mtm_loss == "nce"
              else losses.sampled_softmax_loss)
        # The NCE correction uses the distribution the noise came from.
        log_q = (consts["log_q_field"] if cfg.mtm_noise == "per_field"
                 else consts["log_q"])
        mtm, acc = fn(h, emb, bias, target, noise, log_q, weight, denom)
      out["mtm_loss"] = mtm
      out["mtm_acc"] = acc

    # ---------------------------------------------------------------- MLM
    if cfg.mlm_enabled:
      masked = self.plm(batch["mlm_input_ids"], batch["attention_mask"],
                        deterministic=deterministic)["last_hidden_state"]
      labels = batch["mlm_labels"]
      if cfg.mlm_masked_only:
        masked, labels, _, num_dropped = losses.gather_masked(
            masked, labels, cfg.mlm_max_masked)
        out["mlm_dropped"] = num_dropped.astype(jnp.float32)
      rb = jnp.broadcast_to(r[:, None, :].astype(masked.dtype),
                            masked.shape[:2] + (r.shape[-1],))
      logits = self.mlm_head(jnp.concatenate([masked, rb], axis=-1),
                             deterministic=deterministic)
      mlm, count = losses.mlm_loss(
          logits, labels, denominator=None if norms is None else norms["mlm"])
      out["mlm_loss"] = mlm
      out["mlm_masked_tokens"] = count.astype(jnp.float32)

    # `total` holds the ICL surrogate in micro-batch mode (0 otherwise).
    out["loss"] = total + total_loss(out, cfg)
    return out

  def _noise(self, num_slots: int, batch, consts) -> Array:
    cfg = self.config
    rng = self.make_rng("noise")
    shape = (num_slots, cfg.mtm_num_negatives)
    if cfg.mtm_noise == "per_field":
      fields = batch["mtm_positions"].reshape(-1)
      return noise_lib.sample_noise_per_field(
          rng, consts["log_q"], consts["field_offsets"], consts["field_sizes"],
          fields, cfg.mtm_num_negatives)
    return noise_lib.sample_noise(rng, consts["log_q"], shape)


def total_loss(terms: dict[str, Array], cfg: FlipConfig) -> Array:
  """The weighted sum of the loss terms present (the one place of weights)."""
  return sum(getattr(cfg, f"{k}_weight") * terms[f"{k}_loss"]
             for k in ("icl", "mtm", "mlm") if f"{k}_loss" in terms)


def loss_norms(batch: dict[str, Array], cfg: FlipConfig) -> dict[str, Array]:
  """Denominators of the MTM and MLM means over a whole (global) batch.

  MTM: the sum of the slot weights; MLM: the number of labelled tokens the
  head sees (at most ``mlm_max_masked`` per row in the fast form). Each is 1
  where the batch has none, matching the losses' own 0-not-NaN convention.
  """
  norms = {}
  if cfg.mtm_enabled:
    norms["mtm"] = losses.weight_denominator(batch["mtm_weight"])
  if cfg.mlm_enabled:
    per_row = jnp.sum(batch["mlm_labels"] != -100, axis=1, dtype=jnp.int32)
    if cfg.mlm_masked_only:
      per_row = jnp.minimum(per_row, cfg.mlm_max_masked)
    norms["mlm"] = jnp.maximum(jnp.sum(per_row), 1).astype(jnp.float32)
  return norms


def make_consts(feature_map) -> dict[str, np.ndarray]:
  """Host-side constants the step needs (noise distribution, field layout)."""
  counts = np.asarray(feature_map.counts, np.float64)
  log_q = noise_lib.noise_log_probs(counts)
  offsets = np.asarray(feature_map.offsets, np.int32)
  sizes = np.asarray(feature_map.vocab_sizes, np.int32)
  return {
      "log_q": np.asarray(log_q, np.float32),
      "log_q_field": np.asarray(
          noise_lib.field_conditional_log_probs(log_q, offsets, sizes),
          np.float32),
      "field_offsets": offsets,
      "field_sizes": sizes,
  }
