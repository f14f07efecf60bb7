"""Frozen hyper-parameters of a BERT/RoBERTa encoder (the PLM of FLIP).

`PLMConfig` is the model boundary: modules never see an HF config or an
ml_collections ConfigDict. `PLMConfig.from_hf` reads a transformers config
object or the dict of a `config.json`; `PLMConfig.to_hf_dict` writes the
fields back in HF naming so `transformers.AutoConfig` rebuilds the same model.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

# Model families this package implements (FLIP.md section 4 uses TinyBERT,
# MiniLM and RoBERTa). The value is the attribute prefix HF uses for the bare
# encoder inside `*ForMaskedLM` checkpoints.
SUPPORTED_MODEL_TYPES = ("bert", "roberta")

# HF `hidden_act` strings we implement; "gelu" is the exact erf form.
SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")
# Random bits per dropped element (PLMConfig.dropout_bits).
DROPOUT_BITS = (32, 16, 8)
# Attention implementations (PLMConfig.attention_impl).
ATTENTION_IMPLS = ("xla", "fused", "cudnn")

_REQUIRED_HF_FIELDS = (
    "model_type", "vocab_size", "hidden_size", "num_hidden_layers",
    "num_attention_heads", "intermediate_size", "max_position_embeddings",
)


@dataclasses.dataclass(frozen=True)
class PLMConfig:
  """Architecture of a post-LN BERT/RoBERTa encoder.

  Attributes:
    model_type: 'bert' or 'roberta' (RoBERTa derives position ids from the
      padding mask, offset by `pad_token_id`).
    vocab_size: rows of the word embedding table.
    hidden_size: width H of every token state.
    num_layers: transformer layers (after optional truncation).
    num_heads: attention heads; must divide `hidden_size`.
    intermediate_size: feed-forward width.
    max_position_embeddings: rows of the position table.
    type_vocab_size: rows of the token-type table.
    layer_norm_eps: epsilon of every LayerNorm.
    pad_token_id: padding id (RoBERTa's position offset).
    hidden_dropout: dropout on embeddings and sub-layer outputs.
    attention_dropout: dropout on attention probabilities.
    hidden_act: activation of the feed-forward and MLM transform.
    initializer_range: std of the normal init of fresh weights.
    bos_token_id: kept for a faithful `config.json` round trip.
    eos_token_id: kept for a faithful `config.json` round trip.
    attention_impl: 'xla' (einsums, softmax, attention dropout), 'fused'
      (`jax.nn.dot_product_attention` with its default implementation,
      which in jax 0.10 is XLA's own, not cuDNN) or 'cudnn' (the same with
      implementation='cudnn': cuDNN's fused kernel, GPUs only, bf16/fp16,
      head size a multiple of 8, even lengths when training). 'fused' and
      'cudnn' have no attention-probability dropout, so they need
      attention_dropout == 0 when training. Not part of the checkpoint.
    dropout_bits: random bits drawn per dropped element: 32 (flax's
      Bernoulli draw, the default) or 16 / 8 (one 32-bit draw shared by
      2 / 4 elements; the rate becomes round(rate * 2**bits) / 2**bits,
      e.g. 0.100006 / 0.1016 for 0.1; cheaper masks, other draws). Not part
      of the checkpoint.
    fused_qkv: compute the query, key and value projections as one matmul
      (the three kernels, kept as separate params, concatenated at apply
      time: the param tree, HF import and export are unchanged; outputs
      equal to float tolerance). Not part of the checkpoint.
  """
  model_type: str
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_position_embeddings: int
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  pad_token_id: int = 0
  hidden_dropout: float = 0.1
  attention_dropout: float = 0.1
  hidden_act: str = "gelu"
  initializer_range: float = 0.02
  bos_token_id: int | None = None
  eos_token_id: int | None = None
  attention_impl: str = "xla"
  dropout_bits: int = 32
  fused_qkv: bool = False

  def __post_init__(self):
    if self.dropout_bits not in DROPOUT_BITS:
      raise ValueError(f"PLMConfig: dropout_bits must be one of "
                       f"{DROPOUT_BITS}, got {self.dropout_bits!r}")
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(f"PLMConfig: attention_impl must be one of "
                       f"{ATTENTION_IMPLS}, got {self.attention_impl!r}")
    if self.model_type not in SUPPORTED_MODEL_TYPES:
      raise ValueError(
          f"PLMConfig: unsupported model_type {self.model_type!r}; supported:"
          f" {', '.join(SUPPORTED_MODEL_TYPES)}")
    if self.hidden_act not in SUPPORTED_ACTIVATIONS:
      raise ValueError(
          f"PLMConfig: unsupported hidden_act {self.hidden_act!r}; supported:"
          f" {', '.join(SUPPORTED_ACTIVATIONS)}")
    for name in ("vocab_size", "hidden_size", "num_layers", "num_heads",
                 "intermediate_size", "max_position_embeddings",
                 "type_vocab_size"):
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"PLMConfig: {name} must be a positive int, got"
                         f" {value!r}")
    if self.hidden_size % self.num_heads:
      raise ValueError(
          f"PLMConfig: hidden_size {self.hidden_size} is not divisible by"
          f" num_heads {self.num_heads}")
    for name in ("hidden_dropout", "attention_dropout"):
      value = getattr(self, name)
      if not 0.0 <= value < 1.0:
        raise ValueError(f"PLMConfig: {name} must be in [0, 1), got {value}")

  @property
  def head_dim(self) -> int:
    """Per-head width (the `kv` axis)."""
    return self.hidden_size // self.num_heads

  def replace(self, **changes) -> "PLMConfig":
    """Returns a copy with some fields changed (validated again)."""
    return dataclasses.replace(self, **changes)

  @classmethod
  def from_hf(cls, hf_config_or_dict: Any) -> "PLMConfig":
    """Builds a config from a transformers config or a `config.json` dict.

    Args:
      hf_config_or_dict: a `transformers.PretrainedConfig` (anything with
        `to_dict()`) or a mapping with HF field names.

    Returns:
      The equivalent PLMConfig.

    Raises:
      ValueError: a required field is missing, the model type or activation is
        unsupported, or the checkpoint uses a feature this encoder lacks
        (relative positions, decoder mode).
    """
    if hasattr(hf_config_or_dict, "to_dict"):
      d = hf_config_or_dict.to_dict()
    elif isinstance(hf_config_or_dict, Mapping):
      d = dict(hf_config_or_dict)
    else:
      raise TypeError("PLMConfig.from_hf: expected a transformers config or a"
                      f" dict, got {type(hf_config_or_dict).__name__}")
    missing = [k for k in _REQUIRED_HF_FIELDS if k not in d]
    if missing:
      raise ValueError(f"PLMConfig.from_hf: config lacks fields {missing}")
    if d["model_type"] not in SUPPORTED_MODEL_TYPES:
      raise ValueError(
          f"PLMConfig.from_hf: unsupported model_type {d['model_type']!r};"
          f" supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
    pos_type = d.get("position_embedding_type") or "absolute"
    if pos_type != "absolute":
      raise ValueError("PLMConfig.from_hf: only absolute position embeddings"
                       f" are implemented, config has {pos_type!r}")
    if d.get("is_decoder") or d.get("add_cross_attention"):
      raise ValueError("PLMConfig.from_hf: decoder/cross-attention BERT"
                       " variants are not supported")
    default_pad = 1 if d["model_type"] == "roberta" else 0
    pad = d.get("pad_token_id")
    return cls(
        model_type=d["model_type"],
        vocab_size=int(d["vocab_size"]),
        hidden_size=int(d["hidden_size"]),
        num_layers=int(d["num_hidden_layers"]),
        num_heads=int(d["num_attention_heads"]),
        intermediate_size=int(d["intermediate_size"]),
        max_position_embeddings=int(d["max_position_embeddings"]),
        type_vocab_size=int(d.get("type_vocab_size", 2)),
        layer_norm_eps=float(d.get("layer_norm_eps", 1e-12)),
        pad_token_id=default_pad if pad is None else int(pad),
        hidden_dropout=float(d.get("hidden_dropout_prob", 0.1)),
        attention_dropout=float(d.get("attention_probs_dropout_prob", 0.1)),
        hidden_act=str(d.get("hidden_act", "gelu")),
        initializer_range=float(d.get("initializer_range", 0.02)),
        bos_token_id=d.get("bos_token_id"),
        eos_token_id=d.get("eos_token_id"),
    )

  def to_hf_dict(self) -> dict[str, Any]:
    """Returns the `config.json` fields transformers needs for this model."""
    arch = {"bert": "BertForMaskedLM", "roberta": "RobertaForMaskedLM"}
    d = {
        "architectures": [arch[self.model_type]],
        "model_type": self.model_type,
        "vocab_size": self.vocab_size,
        "hidden_size": self.hidden_size,
        "num_hidden_layers": self.num_layers,
        "num_attention_heads": self.num_heads,
        "intermediate_size": self.intermediate_size,
        "hidden_act": self.hidden_act,
        "hidden_dropout_prob": self.hidden_dropout,
        "attention_probs_dropout_prob": self.attention_dropout,
        "max_position_embeddings": self.max_position_embeddings,
        "type_vocab_size": self.type_vocab_size,
        "initializer_range": self.initializer_range,
        "layer_norm_eps": self.layer_norm_eps,
        "pad_token_id": self.pad_token_id,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
    }
    if self.bos_token_id is not None:
      d["bos_token_id"] = self.bos_token_id
    if self.eos_token_id is not None:
      d["eos_token_id"] = self.eos_token_id
    return d
