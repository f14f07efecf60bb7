"""One declarative table between our PLM params and HF BERT/RoBERTa keys.

Each row is (flax path pattern, HF key pattern, hook). `{i}` stands for the
layer index. Flax paths are relative to the `PLMEncoder` (or `MLMHead`) param
dict; HF encoder keys are relative to the base model (`bert.` / `roberta.` is
added or stripped by the caller). Both directions are derived from the same
rows: `hook.to_torch(array, cfg)` maps a Flax array to the HF tensor layout
and `hook.to_flax(array, cfg)` inverts it exactly (pure reshapes/transposes,
so a round trip is bit-identical); the hook type is
`flip_jax.layout_hooks.Hook`.

Used by the importer (`flip_jax.models.plm.hf_import`) and the exporter
(`flip_jax.export.hf_export` via `flip_jax.export.torch_mapping`); it lives
with the model so that `flip_jax.models` never imports `flip_jax.export`.

Hooks (H hidden, N heads, D head width):
  identity     embeddings, LayerNorm scale/bias, plain biases
  transpose    Dense kernel (in, out) <-> torch Linear weight (out, in)
  split_heads  q/k/v kernel (H, N, D) <-> weight (N*D, H)
  heads_bias   q/k/v bias (N, D) <-> bias (N*D,)
  merge_heads  attention output kernel (N, D, H) <-> weight (H, N*D)
"""
from __future__ import annotations

import re

from flip_jax.layout_hooks import Hook
from flip_jax.layout_hooks import IDENTITY
from flip_jax.layout_hooks import TRANSPOSE
from flip_jax.models.plm.config import PLMConfig

__all__ = [
    "BASE_PREFIX", "ENCODER_ROWS", "HOOKS", "Hook", "IGNORED_PATTERNS",
    "MLM_HEAD_ROWS", "POOLER_KEYS", "TIED_DECODER_KEYS", "encoder_rows",
    "expand", "head_rows", "normalize_hf_key",
]


def _heads(cfg: PLMConfig) -> tuple[int, int]:
  return cfg.num_heads, cfg.head_dim


HOOKS: dict[str, Hook] = {
    "identity": IDENTITY,
    "transpose": TRANSPOSE,
    "split_heads": Hook(
        "split_heads",
        lambda a, c: a.reshape(a.shape[0], -1).T,
        lambda a, c: a.T.reshape(a.shape[1], *_heads(c))),
    "heads_bias": Hook(
        "heads_bias",
        lambda a, c: a.reshape(-1),
        lambda a, c: a.reshape(*_heads(c))),
    "merge_heads": Hook(
        "merge_heads",
        lambda a, c: a.reshape(-1, a.shape[-1]).T,
        lambda a, c: a.T.reshape(*_heads(c), a.shape[0])),
}

_LN = (("scale", "weight"), ("bias", "bias"))


def _layer_norm(flax_prefix: str, hf_prefix: str):
  return tuple((f"{flax_prefix}/{f}", f"{hf_prefix}.{t}", "identity")
               for f, t in _LN)


def _dense(flax_prefix: str, hf_prefix: str, kernel_hook="transpose",
           bias_hook="identity"):
  return ((f"{flax_prefix}/kernel", f"{hf_prefix}.weight", kernel_hook),
          (f"{flax_prefix}/bias", f"{hf_prefix}.bias", bias_hook))


_L = "encoder/layer_{i}"
_HL = "encoder.layer.{i}"

# Rows of the bare encoder (identical for BERT and RoBERTa).
ENCODER_ROWS: tuple[tuple[str, str, str], ...] = (
    ("embeddings/word_embeddings/embedding",
     "embeddings.word_embeddings.weight", "identity"),
    ("embeddings/position_embeddings/embedding",
     "embeddings.position_embeddings.weight", "identity"),
    ("embeddings/token_type_embeddings/embedding",
     "embeddings.token_type_embeddings.weight", "identity"),
    *_layer_norm("embeddings/LayerNorm", "embeddings.LayerNorm"),
    *_dense(f"{_L}/attention/query", f"{_HL}.attention.self.query",
            "split_heads", "heads_bias"),
    *_dense(f"{_L}/attention/key", f"{_HL}.attention.self.key",
            "split_heads", "heads_bias"),
    *_dense(f"{_L}/attention/value", f"{_HL}.attention.self.value",
            "split_heads", "heads_bias"),
    *_dense(f"{_L}/attention/output/dense", f"{_HL}.attention.output.dense",
            "merge_heads"),
    *_layer_norm(f"{_L}/attention/output/LayerNorm",
                 f"{_HL}.attention.output.LayerNorm"),
    *_dense(f"{_L}/intermediate/dense", f"{_HL}.intermediate.dense"),
    *_dense(f"{_L}/output/dense", f"{_HL}.output.dense"),
    *_layer_norm(f"{_L}/output/LayerNorm", f"{_HL}.output.LayerNorm"),
)

# Rows of the MLM head, per family; HF keys are absolute (no base prefix).
MLM_HEAD_ROWS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "bert": (
        *_dense("dense", "cls.predictions.transform.dense"),
        *_layer_norm("LayerNorm", "cls.predictions.transform.LayerNorm"),
        ("bias", "cls.predictions.bias", "identity"),
    ),
    "roberta": (
        *_dense("dense", "lm_head.dense"),
        *_layer_norm("LayerNorm", "lm_head.layer_norm"),
        ("bias", "lm_head.bias", "identity"),
    ),
}

# HF key prefix of the bare encoder inside task models, per family.
BASE_PREFIX: dict[str, str] = {"bert": "bert.", "roberta": "roberta."}

# Tensors HF stores for the tied decoder: the weight equals the word table and
# the bias aliases the head bias above.
TIED_DECODER_KEYS: dict[str, tuple[str, str]] = {
    "bert": ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias"),
    "roberta": ("lm_head.decoder.weight", "lm_head.decoder.bias"),
}

# Encoder-relative keys that are legitimately ignored on import (reported).
IGNORED_PATTERNS = (
    re.compile(r"^pooler\."),
    re.compile(r"(^|\.)position_ids$"),
    re.compile(r"^embeddings\.token_type_ids$"),
)

# HF pooler (not used by FLIP: the sentence vector is the first token state,
# FLIP.md section 4); exported so AutoModel loads without missing weights.
POOLER_KEYS = ("pooler.dense.weight", "pooler.dense.bias")


def expand(rows, num_layers: int) -> list[tuple[str, str, Hook]]:
  """Fills `{i}` for every layer; returns (flax path, HF key, hook) rows."""
  out = []
  for flax_pat, hf_pat, hook in rows:
    if "{i}" in flax_pat:
      for i in range(num_layers):
        out.append((flax_pat.format(i=i), hf_pat.format(i=i), HOOKS[hook]))
    else:
      out.append((flax_pat, hf_pat, HOOKS[hook]))
  return out


def encoder_rows(cfg: PLMConfig) -> list[tuple[str, str, Hook]]:
  return expand(ENCODER_ROWS, cfg.num_layers)


def head_rows(cfg: PLMConfig) -> list[tuple[str, str, Hook]]:
  return expand(MLM_HEAD_ROWS[cfg.model_type], 0)


def normalize_hf_key(key: str) -> str:
  """Old TF-converted checkpoints name LayerNorm params gamma/beta."""
  key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
  return re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
