"""PyTorch twins of the Flax CTR backbones (FLIP.md 3, 7).

Each backbone computes exactly the forward pass of its namesake in
`flip_jax.models.ctr` and returns the same dict ``{'ctr/rep': [B, D_r],
'ctr/logit': [B]}`` (logit = linear + head . rep, no output bias). Parameter
names are the torch side of the table in `flip_jax.export.ctr_mapping`,
which moves weights in both directions:

    model = build_torch(cfg)                               # cfg: CTRConfig
    rows = ctr_mapping.backbone_rows(cfg)
    model.load_state_dict(to_tensors(ctr_mapping.to_torch(rows, variables)))

The modules are inference twins: their parameters are placeholders (zeros or
torch defaults) until a state dict from the mapping is loaded. BatchNorm
layers (``dnn_use_bn``, AFN) carry the Flax ``batch_stats`` as their running
statistics.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

from flip_jax.export.torch_layers import (  # pylint: disable=g-multiple-import
    AFMAttention, CIN, CrossNet, CrossNetMix, CrossNetV2, InteractingLayer,
    LogTransformLayer, MLP, _pairs)


def to_tensors(arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
  """numpy state dict -> torch tensors (copies; keeps dtypes)."""
  return {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}


class CTRTorch(nn.Module):
  """Base backbone, as `flip_jax.models.ctr.CTRModel`.

  Tables ``embedding`` (N, e) and ``linear`` (N, 1, when `use_linear`), the
  subclass's encoder parts, and the logit head ``head`` (Linear(D_r, 1), no
  bias). Subclasses define `build`, `encode` and `rep_dim`, and override
  `rep_logit` where the logit is not ``head(rep)``.

  Attributes:
    cfg: the backbone's `CTRConfig` (fields as in the Flax model).
  """
  use_linear = True

  def __init__(self, cfg):
    super().__init__()
    self.cfg = cfg
    self.embedding = nn.Embedding(cfg.num_features, cfg.embed_dim)
    if self.use_linear:
      self.linear = nn.Embedding(cfg.num_features, 1)
    self.build(cfg)
    head_in = self.head_dim()
    if head_in:
      self.head = nn.Linear(head_in, 1, bias=False)

  def build(self, cfg) -> None:
    """Creates the encoder submodules."""

  def head_dim(self) -> int:
    """Input width of ``head`` (0: no head)."""
    return self.rep_dim

  def _dnn(self, in_dim: int) -> MLP:
    cfg = self.cfg
    return MLP(in_dim, cfg.dnn_hidden, cfg.dnn_act, cfg.dropout, cfg.dnn_use_bn)

  @property
  def input_dim(self) -> int:
    return self.cfg.num_fields * self.cfg.embed_dim

  @property
  def rep_dim(self) -> int:
    """D_r, as `flip_jax.models.ctr.rep_dim`."""
    raise NotImplementedError

  def encode(self, emb: torch.Tensor) -> torch.Tensor:
    """Field embeddings [B, F, e] -> representation r [B, D_r]."""
    raise NotImplementedError

  def rep_logit(self, rep: torch.Tensor) -> torch.Tensor:
    return self.head(rep)[:, 0]

  def embed(self, ids: torch.Tensor) -> torch.Tensor:
    """Checked lookup: ids [B, F] -> [B, F, e]."""
    cfg = self.cfg
    if ids.dim() != 2 or ids.shape[1] != cfg.num_fields:
      raise ValueError(f"ctr ids: expected shape [batch, {cfg.num_fields}], "
                       f"got {tuple(ids.shape)}")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
      raise ValueError(f"ctr ids: expected an integer dtype, got {ids.dtype}")
    if ids.numel() and (ids.min() < 0 or ids.max() >= cfg.num_features):
      raise ValueError(f"ctr ids: values must lie in [0, {cfg.num_features})"
                       f", got [{int(ids.min())}, {int(ids.max())}]")
    return self.embedding(ids.long())

  def forward(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """ids [B, F] -> {'ctr/rep' [B, D_r], 'ctr/logit' [B]} (no out bias)."""
    rep = self.encode(self.embed(ids))
    z = self.rep_logit(rep)
    if self.use_linear:
      z = self.linear(ids.long())[..., 0].sum(-1) + z
    return {"ctr/rep": rep, "ctr/logit": z}


class DCNv2(CTRTorch):
  """r = [cross(x0) ; DNN(x0)]; CrossNetMix or CrossNetV2 by cfg.cross_type."""

  def build(self, cfg):
    d = self.input_dim
    if cfg.cross_type == "mix":
      self.cross = CrossNetMix(d, cfg.cross_layers, cfg.num_experts,
                               cfg.low_rank)
    else:
      self.cross = CrossNetV2(d, cfg.cross_layers)
    self.dnn = self._dnn(d)

  @property
  def rep_dim(self):
    return self.input_dim + self.cfg.dnn_hidden[-1]

  def encode(self, emb):
    x0 = emb.flatten(1)
    return torch.cat([self.cross(x0), self.dnn(x0)], -1)


class DCNv2Full(DCNv2):
  """DCNv2 with the full-rank cross network whatever cfg.cross_type says."""

  def build(self, cfg):
    self.cross = CrossNetV2(self.input_dim, cfg.cross_layers)
    self.dnn = self._dnn(self.input_dim)


class DCN(DCNv2):
  """DCN (v1): vector cross network + DNN."""

  def build(self, cfg):
    self.cross = CrossNet(self.input_dim, cfg.cross_layers)
    self.dnn = self._dnn(self.input_dim)


def _fm_vector(emb):
  """[B, F, e] -> 1/2[(sum_f e_f)^2 - sum_f e_f^2]  [B, e]."""
  s = emb.sum(1)
  return 0.5 * (s * s - (emb * emb).sum(1))


class FM(CTRTorch):
  """logit = linear + sum(FM vector); no head."""

  def head_dim(self):
    return 0

  @property
  def rep_dim(self):
    return self.cfg.embed_dim

  def encode(self, emb):
    return _fm_vector(emb)

  def rep_logit(self, rep):
    return rep.sum(-1)


class DeepFM(CTRTorch):
  """r = [FM (1) ; DNN(x0)]; logit = linear + r[0] + head(r[1:])."""

  def build(self, cfg):
    self.dnn = self._dnn(self.input_dim)

  def head_dim(self):
    return self.cfg.dnn_hidden[-1]

  @property
  def rep_dim(self):
    return 1 + self.cfg.dnn_hidden[-1]

  def encode(self, emb):
    fm = _fm_vector(emb).sum(-1, keepdim=True)
    return torch.cat([fm, self.dnn(emb.flatten(1))], -1)

  def rep_logit(self, rep):
    return rep[:, 0] + self.head(rep[:, 1:])[:, 0]


class AFM(CTRTorch):
  """r = attention-pooled pairwise products; logit = linear + head(r)."""

  def build(self, cfg):
    self.attention = AFMAttention(cfg.num_fields, cfg.embed_dim,
                                  cfg.afm_attention_factor, cfg.dropout)

  @property
  def rep_dim(self):
    return self.cfg.embed_dim

  def encode(self, emb):
    return self.attention(emb)


class AutoInt(CTRTorch):
  """r = [flatten(interacting layers(E)) ; DNN(x0)]."""

  def build(self, cfg):
    self.att = nn.ModuleList(
        InteractingLayer(cfg.embed_dim, cfg.att_heads, cfg.att_res,
                         cfg.att_scaling) for _ in range(cfg.att_layers))
    self.dnn = self._dnn(self.input_dim)

  @property
  def rep_dim(self):
    return self.input_dim + self.cfg.dnn_hidden[-1]

  def encode(self, emb):
    x = emb
    for layer in self.att:
      x = layer(x)
    return torch.cat([x.flatten(1), self.dnn(emb.flatten(1))], -1)


class DNN(CTRTorch):
  """Plain MLP on the concatenated embeddings (no linear part)."""
  use_linear = False

  def build(self, cfg):
    self.dnn = self._dnn(self.features_dim())

  def features_dim(self) -> int:
    return self.input_dim

  def features(self, emb):
    return emb.flatten(1)

  @property
  def rep_dim(self):
    return self.cfg.dnn_hidden[-1]

  def encode(self, emb):
    return self.dnn(self.features(emb))


class WideDeep(DNN):
  """Wide (linear table) & Deep (MLP)."""
  use_linear = True


class PNN(DNN):
  """Inner-product PNN: DNN([flatten(E) ; <e_i, e_j> for i < j])."""

  def features_dim(self):
    f = self.cfg.num_fields
    return self.input_dim + f * (f - 1) // 2

  def features(self, emb):
    row, col = _pairs(emb.shape[1])
    inner = (emb[:, row] * emb[:, col]).sum(-1)
    return torch.cat([emb.flatten(1), inner], -1)


class AFN(DNN):
  """Adaptive factorisation network: linear + head(DNN(LTL(E)))."""
  use_linear = True

  def build(self, cfg):
    super().build(cfg)
    self.ltl = LogTransformLayer(cfg.num_fields, cfg.embed_dim,
                                 cfg.afn_ltl_hidden, cfg.afn_use_bn)

  def features_dim(self):
    return self.cfg.embed_dim * self.cfg.afn_ltl_hidden

  def features(self, emb):
    return self.ltl(emb)


class XDeepFM(CTRTorch):
  """r = [CIN(E) ; DNN(x0)]."""

  def build(self, cfg):
    self.cin = CIN(cfg.num_fields, cfg.cin_layers, cfg.cin_split_half,
                   cfg.cin_act)
    self.dnn = self._dnn(self.input_dim)

  @property
  def rep_dim(self):
    sizes = self.cfg.cin_layers
    cin = (sum(sizes[:-1]) // 2 + sizes[-1] if self.cfg.cin_split_half
           else sum(sizes))
    return cin + self.cfg.dnn_hidden[-1]

  def encode(self, emb):
    return torch.cat([self.cin(emb), self.dnn(emb.flatten(1))], -1)


TORCH_CTR_MODELS: dict[str, type[CTRTorch]] = {
    "dcnv2": DCNv2, "dcnv2_full": DCNv2Full, "dcn": DCN, "deepfm": DeepFM,
    "fm": FM, "afm": AFM, "autoint": AutoInt, "dnn": DNN,
    "widedeep": WideDeep, "pnn": PNN, "xdeepfm": XDeepFM, "afn": AFN,
}


def build_torch(cfg) -> CTRTorch:
  """The torch backbone for `cfg` (a `CTRConfig`), float32, eval mode."""
  if cfg.name not in TORCH_CTR_MODELS:
    raise ValueError(f"ctr_torch: no torch backbone {cfg.name!r}; known: "
                     f"{sorted(TORCH_CTR_MODELS)}")
  return TORCH_CTR_MODELS[cfg.name](cfg).eval()
