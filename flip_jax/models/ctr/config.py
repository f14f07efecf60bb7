"""`CTRConfig`: the frozen model-boundary config of every ID-based backbone.

Experiment configs are `ml_collections.ConfigDict`s (``config.model.ctr``);
`CTRConfig.from_config` freezes one into this dataclass so that modules never
see a ConfigDict.  Defaults follow FLIP.md 3 and 7 (deepctr-torch settings).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16,
          "float16": jnp.float16}

# Fields supplied by the data (feature map) or the method, never by the
# model config.
_DATA_FIELDS = ("num_features", "num_fields", "num_extra_fields")


@dataclasses.dataclass(frozen=True)
class CTRConfig:
  """Hyper-parameters of one CTR backbone.

  Attributes:
    name: registry key in `flip_jax.models.ctr.CTR_MODELS`.
    num_features: N, rows of the global feature tables.
    num_fields: F, ids per sample.
    embed_dim: e, embedding width per field.
    dnn_hidden: DNN widths (the last is the deep part of the rep).
    dnn_act: DNN activation name.
    dnn_use_bn: BatchNorm inside the DNN.
    dropout: DNN dropout rate.
    dtype: computation dtype name ('float32', 'bfloat16', 'float16').
    cross_layers: DCN / DCNv2 cross layers.
    cross_type: DCNv2 cross network: 'mix' (CrossNetMix, low-rank MoE) or
      'full' (CrossNetV2, full-rank matrix, as in ClickPrompt).
    low_rank: DCNv2 rank r.
    num_experts: DCNv2 experts E.
    att_layers: AutoInt interacting layers.
    att_heads: AutoInt heads.
    att_res: AutoInt residual connection.
    att_scaling: AutoInt 1/sqrt(d) score scaling (off in deepctr / FLIP).
    att_init_std: std of the AutoInt attention matrices.
    cin_layers: xDeepFM CIN feature-map counts.
    cin_split_half: xDeepFM split-half CIN.
    cin_act: xDeepFM CIN activation.
    afn_ltl_hidden: AFN logarithmic neurons.
    afn_use_bn: AFN BatchNorm around the log transformation.
    afm_attention_factor: AFM attention width.
    num_extra_fields: F_x dense fields a method appends to the id fields
      (``extra`` of `CTRModel`; SRP4CTR's queries); 0 = none.
  """
  name: str
  num_features: int
  num_fields: int
  embed_dim: int = 32
  dnn_hidden: tuple[int, ...] = (300, 300, 128)
  dnn_act: str = "relu"
  dnn_use_bn: bool = False
  dropout: float = 0.0
  dtype: str = "float32"
  cross_layers: int = 2
  cross_type: str = "mix"
  low_rank: int = 32
  num_experts: int = 4
  att_layers: int = 3
  att_heads: int = 2
  att_res: bool = True
  att_scaling: bool = False
  att_init_std: float = 0.05
  cin_layers: tuple[int, ...] = (256, 128)
  cin_split_half: bool = True
  cin_act: str = "relu"
  afn_ltl_hidden: int = 256
  afn_use_bn: bool = True
  afm_attention_factor: int = 8
  num_extra_fields: int = 0

  @property
  def uses_batch_norm(self) -> bool:
    """Whether the model keeps a 'batch_stats' collection."""
    return self.dnn_use_bn or (self.name == "afn" and self.afn_use_bn)

  def __post_init__(self):
    for key in ("dnn_hidden", "cin_layers"):
      object.__setattr__(self, key, tuple(int(h) for h in getattr(self, key)))
    problems = []
    if self.num_features <= 0:
      problems.append(f"num_features={self.num_features} must be > 0")
    if self.num_fields <= 0:
      problems.append(f"num_fields={self.num_fields} must be > 0")
    if self.num_extra_fields < 0:
      problems.append(f"num_extra_fields={self.num_extra_fields} must be "
                      ">= 0")
    if self.embed_dim <= 0:
      problems.append(f"embed_dim={self.embed_dim} must be > 0")
    if not self.dnn_hidden or min(self.dnn_hidden) <= 0:
      problems.append(f"dnn_hidden={self.dnn_hidden} must be non-empty, > 0")
    if self.dtype not in DTYPES:
      problems.append(f"dtype={self.dtype!r} not in {sorted(DTYPES)}")
    if self.cross_type not in ("mix", "full"):
      problems.append(f"cross_type={self.cross_type!r} not in ('mix', 'full')")
    if not 0.0 <= self.dropout < 1.0:
      problems.append(f"dropout={self.dropout} must be in [0, 1)")
    if self.att_heads <= 0 or self.embed_dim % self.att_heads:
      problems.append(f"att_heads={self.att_heads} must divide embed_dim="
                      f"{self.embed_dim}")
    if self.cin_split_half and any(h % 2 for h in self.cin_layers[:-1]):
      problems.append(f"cin_layers={self.cin_layers}: split-half needs even "
                      "sizes except the last")
    if problems:
      raise ValueError(f"CTRConfig(name={self.name!r}): " + "; ".join(problems))

  @property
  def jnp_dtype(self) -> Any:
    return DTYPES[self.dtype]

  @property
  def input_dim(self) -> int:
    """D = (F + F_x) * e, width of the concatenated field embeddings x0."""
    return (self.num_fields + self.num_extra_fields) * self.embed_dim

  @classmethod
  def from_config(cls, cd: Mapping[str, Any], num_features: int,
                  num_fields: int, num_extra_fields: int = 0) -> "CTRConfig":
    """Freezes ``config.model.ctr`` (a ConfigDict or mapping).

    Args:
      cd: the model section; every key must be a `CTRConfig` field.
      num_features: N from the feature map.
      num_fields: F from the feature map.
      num_extra_fields: F_x dense fields the method appends (default none).

    Returns:
      The frozen config.

    Raises:
      ValueError: unknown keys, or keys reserved for the data.
    """
    values = dict(cd.to_dict() if hasattr(cd, "to_dict") else cd)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"config.model.ctr: unknown keys {unknown}; known: "
                       f"{sorted(known - set(_DATA_FIELDS))}")
    reserved = [k for k in _DATA_FIELDS if k in values]
    if reserved:
      raise ValueError(f"config.model.ctr: {reserved} come from the feature "
                       "map, not the config")
    if "name" not in values:
      raise ValueError("config.model.ctr: missing 'name'")
    for key in ("dnn_hidden", "cin_layers"):
      if key in values:
        values[key] = tuple(values[key])
    return cls(num_features=int(num_features), num_fields=int(num_fields),
               num_extra_fields=int(num_extra_fields), **values)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)
