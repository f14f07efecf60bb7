"""CTR finetuning models: FLIP_ID, FLIP_PLM and the joint FLIP (FLIP.md 6).

One module, ``FlipCtrModel``, with ``mode`` in {id, plm, joint}; the same
architecture trained without ``init_from`` gives the baselines (the ID model
from scratch, the PLM-only CTR model from the public weights).

Param layout (matches pretraining so ``init_from`` can keep ``ctr/`` and
``plm/``):
  ctr/...        the ID backbone; ``ctr/linear`` and ``ctr/head`` (w) are
                 created only here, never in pretraining
  ctr_bias       b_ID, the ID branch's output bias (init 0)
  plm/...        the PLM encoder
  txt_head       Linear(H, 1): z_PLM + b_PLM (torch default init)
  alpha          the learnable mixing scalar (joint; init 0, unconstrained)
  out_bias       b_out of the joint prediction (init 0)

Joint prediction, in logit space (FLIP.md 6.3, non-AMP path):
  s = α·(z_ID + b_ID) + (1 − α)·(z_PLM + b_PLM) + b_out
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from flip_jax.models import ctr as ctr_lib
from flip_jax.models import plm as plm_lib
from flip_jax.models.layers import TorchDense

MODES = ("id", "plm", "joint")


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
  mode: str
  ctr: Any = None          # ctr_lib.CTRConfig (id, joint)
  plm: Any = None          # plm_lib.PLMConfig (plm, joint)
  alpha_init: float = 0.0
  # 'raw': α unconstrained (official); 'sigmoid': α = sigmoid(a).
  alpha_param: str = "raw"
  dtype: Any = jnp.float32
  plm_remat: bool = False

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"finetune mode {self.mode!r}: expected one of {MODES}")
    if self.mode in ("id", "joint") and self.ctr is None:
      raise ValueError(f"mode {self.mode!r} needs a ctr config")
    if self.mode in ("plm", "joint") and self.plm is None:
      raise ValueError(f"mode {self.mode!r} needs a plm config")
    if self.alpha_param not in ("raw", "sigmoid"):
      raise ValueError(f"alpha_param {self.alpha_param!r}: raw|sigmoid")


def _scalar(init_value: float):
  def init(key, shape=(), dtype=jnp.float32):
    del key
    return jnp.full(shape, init_value, dtype)
  return init


class FlipCtrModel(nn.Module):
  """ID-only, PLM-only or joint CTR model; returns named logits."""
  config: FinetuneConfig

  def setup(self):
    cfg = self.config
    if cfg.mode in ("id", "joint"):
      self.ctr = ctr_lib.build(cfg.ctr)
      self.ctr_bias = self.param("ctr_bias", _scalar(0.0), ())
    if cfg.mode in ("plm", "joint"):
      self.plm = plm_lib.PLMEncoder(cfg.plm, dtype=cfg.dtype,
                                    remat=cfg.plm_remat)
      self.txt_head = TorchDense(1, axes=("embed", None), dtype=jnp.float32)
    if cfg.mode == "joint":
      a0 = cfg.alpha_init
      if cfg.alpha_param == "sigmoid":
        a0 = float(jnp.log(a0 / (1 - a0))) if 0 < a0 < 1 else 0.0
      self.alpha_raw = self.param("alpha", _scalar(a0), ())
      self.out_bias = self.param("out_bias", _scalar(0.0), ())

  def alpha(self):
    if self.config.alpha_param == "sigmoid":
      return jax.nn.sigmoid(self.alpha_raw)
    return self.alpha_raw

  def __call__(self, batch, *, deterministic: bool = True):
    cfg = self.config
    out = {}
    if cfg.mode in ("id", "joint"):
      z = self.ctr(batch["ids"], deterministic=deterministic)["ctr/logit"]
      out["ctr/logit"] = z.astype(jnp.float32) + self.ctr_bias
    if cfg.mode in ("plm", "joint"):
      cls = self.plm(batch["input_ids"], batch["attention_mask"],
                     deterministic=deterministic)["cls"]
      out["txt/logit"] = self.txt_head(cls.astype(jnp.float32))[..., 0]
    if cfg.mode == "id":
      out["logit"] = out["ctr/logit"]
    elif cfg.mode == "plm":
      out["logit"] = out["txt/logit"]
    else:
      a = self.alpha()
      out["logit"] = (a * out["ctr/logit"] + (1.0 - a) * out["txt/logit"]
                      + self.out_bias)
      out["alpha"] = a
    return out
