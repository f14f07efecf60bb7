"""PyTorch twins of the Flax CTR backbones and of the finetuned FLIP model.

Each backbone here computes exactly the forward pass of its namesake in
`flip_jax.models.ctr` (FLIP.md 3, 7) and returns the same dict
``{'ctr/rep': [B, D_r], 'ctr/logit': [B]}`` (logit = linear + head . rep,
no output bias). Parameter names are the torch side of the table in
`flip_jax.export.ctr_mapping`, which moves weights in both directions:

    model = build_torch(cfg)                               # cfg: CTRConfig
    rows = ctr_mapping.backbone_rows(cfg)
    model.load_state_dict(to_tensors(ctr_mapping.to_torch(rows, variables)))

The modules are inference twins: their parameters are placeholders (zeros or
torch defaults) until a state dict from the mapping is loaded.

`FlipCtrTorch` is the finetuned model of `flip_jax.models.finetune` (modes
id / plm / joint): the ID backbone, a Hugging Face `AutoModel` as the PLM
(sentence vector = first token of the last layer), `txt_head`, α and the
biases, with the joint logit (FLIP.md 6.3)

    s = α·(z_ID + b_ID) + (1 − α)·(z_PLM + b_PLM) + b_out.

`FlipCtrTorch.from_pretrained(dir)` loads a folder written by
`flip_jax.export.finetuned.export_finetuned`.
"""
from __future__ import annotations

import itertools
import json
import math
import pathlib
from typing import Any, Mapping

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from flip_jax.export import ctr_mapping
from flip_jax.models.ctr.config import CTRConfig

EXPORT_CONFIG = "flip_ctr.json"
CTR_WEIGHTS = "ctr_model.safetensors"
PLM_DIR = "plm"
FORMAT_VERSION = 1

ACTIVATIONS = {"relu": torch.relu, "gelu": F.gelu, "tanh": torch.tanh,
               "sigmoid": torch.sigmoid, "linear": lambda x: x}
BN_EPS = 1e-5                      # flip_jax.models.layers.TORCH_BN_EPS


def to_tensors(arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
  """numpy state dict -> torch tensors (copies; keeps dtypes)."""
  return {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}


def _activation(name: str):
  if name not in ACTIVATIONS:
    raise ValueError(f"unknown activation {name!r}; known: "
                     f"{sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def _params(shapes) -> nn.ParameterList:
  return nn.ParameterList(nn.Parameter(torch.zeros(s)) for s in shapes)


def _pairs(num_fields: int) -> tuple[list[int], list[int]]:
  pairs = list(itertools.combinations(range(num_fields), 2))
  if not pairs:
    raise ValueError(f"pairwise interactions need >= 2 fields, got "
                     f"{num_fields}")
  return [p[0] for p in pairs], [p[1] for p in pairs]


class MLP(nn.Module):
  """deepctr DNN: Linear -> [BatchNorm] -> activation -> dropout, per layer."""

  def __init__(self, in_dim: int, hidden, act="relu", dropout=0.0,
               use_bn=False):
    super().__init__()
    dims = [in_dim, *hidden]
    self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, hidden))
    self.norms = nn.ModuleList(nn.BatchNorm1d(h, eps=BN_EPS) for h in hidden
                               ) if use_bn else None
    self.act = _activation(act)
    self.dropout = nn.Dropout(dropout)

  def forward(self, x):
    for i, linear in enumerate(self.linears):
      x = linear(x)
      if self.norms is not None:
        x = self.norms[i](x)
      x = self.dropout(self.act(x))
    return x


class CrossNetMix(nn.Module):
  """DCN-Mix: per expert x0 ⊙ (U tanh(C tanh(V^T x)) + b), softmax-gated."""

  def __init__(self, d: int, num_layers: int, num_experts: int, rank: int):
    super().__init__()
    e, r = num_experts, rank
    self.gates = nn.Linear(d, e, bias=False)        # the E gates, stacked
    self.U = _params([(e, d, r)] * num_layers)
    self.V = _params([(e, d, r)] * num_layers)
    self.C = _params([(e, r, r)] * num_layers)
    self.bias = _params([(d,)] * num_layers)

  def forward(self, x0):
    x = x0
    for u, v, c, b in zip(self.U, self.V, self.C, self.bias):
      p = torch.softmax(self.gates(x), dim=-1)                  # [B, E]
      h = torch.tanh(torch.einsum("bd,edr->ber", x, v))
      h = torch.tanh(torch.einsum("eij,bej->bei", c, h))        # [B, E, r]
      uh = torch.einsum("edr,ber->bed", u, h)                   # [B, E, D]
      x = (p[:, :, None] * (x0[:, None] * (uh + b))).sum(1) + x
    return x


class CrossNetV2(nn.Module):
  """Full-rank DCNv2 cross: x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l."""

  def __init__(self, d: int, num_layers: int):
    super().__init__()
    self.linears = nn.ModuleList(nn.Linear(d, d, bias=False)
                                 for _ in range(num_layers))
    self.bias = _params([(d,)] * num_layers)

  def forward(self, x0):
    x = x0
    for linear, b in zip(self.linears, self.bias):
      x = x0 * (linear(x) + b) + x
    return x


class CrossNet(nn.Module):
  """DCN vector cross: x_{l+1} = x0 (x_l . w_l) + b_l + x_l."""

  def __init__(self, d: int, num_layers: int):
    super().__init__()
    self.kernels = _params([(d,)] * num_layers)
    self.bias = _params([(d,)] * num_layers)

  def forward(self, x0):
    x = x0
    for w, b in zip(self.kernels, self.bias):
      x = x0 * (x @ w)[:, None] + b + x
    return x


class InteractingLayer(nn.Module):
  """AutoInt multi-head self-attention over fields (deepctr layout)."""

  def __init__(self, e: int, heads: int, use_res: bool, scaling: bool):
    super().__init__()
    self.heads, self.use_res, self.scaling = heads, use_res, scaling
    names = ("W_query", "W_key", "W_value") + (("W_res",) if use_res else ())
    for name in names:
      setattr(self, name, nn.Parameter(torch.zeros(e, e)))

  def forward(self, x):                                         # [B, F, e]
    b, f, e = x.shape
    d = e // self.heads
    split = lambda t: t.reshape(b, f, self.heads, d).transpose(1, 2)
    q, k, v = (split(x @ w) for w in (self.W_query, self.W_key, self.W_value))
    scores = q @ k.transpose(-1, -2)
    if self.scaling:
      scores = scores / math.sqrt(d)
    out = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(b, f, e)
    if self.use_res:
      out = out + x @ self.W_res
    return torch.relu(out)


class CIN(nn.Module):
  """xDeepFM compressed interaction network: [B, F, e] -> [B, maps]."""

  def __init__(self, num_fields: int, layer_sizes, split_half: bool, act: str):
    super().__init__()
    self.split_half, self.act = split_half, _activation(act)
    self.convs, h = nn.ModuleList(), num_fields
    for i, size in enumerate(layer_sizes):
      self.convs.append(nn.Conv1d(h * num_fields, size, 1))
      last = i == len(layer_sizes) - 1
      h = size // 2 if split_half and not last else size

  def forward(self, x0):
    hidden, outputs = x0, []
    for i, conv in enumerate(self.convs):
      z = torch.einsum("bhd,bmd->bhmd", hidden, x0).flatten(1, 2)
      z = self.act(conv(z))                                     # [B, size, e]
      size = z.shape[1]
      if self.split_half and i != len(self.convs) - 1:
        hidden, direct = z[:, :size // 2], z[:, size // 2:]
      else:
        hidden = direct = z
      outputs.append(direct)
    return torch.cat(outputs, 1).sum(-1)


class AFMAttention(nn.Module):
  """AFM attention pooling of the pairwise products."""

  def __init__(self, num_fields: int, e: int, factor: int, dropout: float):
    super().__init__()
    self.row, self.col = _pairs(num_fields)
    self.W = nn.Parameter(torch.zeros(e, factor))
    self.b = nn.Parameter(torch.zeros(factor))
    self.h = nn.Parameter(torch.zeros(factor, 1))
    self.dropout = nn.Dropout(dropout)

  def forward(self, emb):
    bi = emb[:, self.row] * emb[:, self.col]                    # [B, P, e]
    score = torch.softmax(torch.relu(bi @ self.W + self.b) @ self.h, dim=1)
    return self.dropout((score * bi).sum(1))


class LogTransformLayer(nn.Module):
  """AFN logarithmic transformation: [B, F, e] -> [B, e * hidden]."""

  def __init__(self, num_fields: int, e: int, hidden: int, use_bn: bool):
    super().__init__()
    self.weights = nn.Parameter(torch.zeros(num_fields, hidden))
    self.biases = nn.Parameter(torch.zeros(hidden))
    self.use_bn = use_bn
    if use_bn:
      self.bn_0 = nn.BatchNorm1d(e, eps=BN_EPS)
      self.bn_1 = nn.BatchNorm1d(e, eps=BN_EPS)

  def forward(self, emb):
    x = torch.log(emb.abs().clamp_min(1e-7)).transpose(1, 2)   # [B, e, F]
    if self.use_bn:
      x = self.bn_0(x)
    x = torch.exp(x @ self.weights + self.biases)               # [B, e, H]
    if self.use_bn:
      x = self.bn_1(x)
    return x.flatten(1)


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


class FlipCtrTorch(nn.Module):
  """The finetuned FLIP CTR model (mode id / plm / joint) in PyTorch.

  Attributes:
    mode: 'id', 'plm' or 'joint'.
    alpha_param: 'raw' (α used as is) or 'sigmoid' (α = sigmoid(alpha)).
    ctr: the ID backbone (id, joint); ctr_bias its output bias b_ID.
    plm: a transformers model (plm, joint); txt_head Linear(H, 1).
    alpha, out_bias: the mixing scalar and b_out (joint).
  """

  def __init__(self, mode: str, ctr_cfg=None, plm: nn.Module | None = None, *,
               alpha_param: str = "raw"):
    super().__init__()
    if mode not in ("id", "plm", "joint"):
      raise ValueError(f"FlipCtrTorch: mode {mode!r} not in id|plm|joint")
    if alpha_param not in ("raw", "sigmoid"):
      raise ValueError(f"FlipCtrTorch: alpha_param {alpha_param!r} not in "
                       "raw|sigmoid")
    self.mode, self.alpha_param = mode, alpha_param
    if mode != "plm":
      if ctr_cfg is None:
        raise ValueError(f"FlipCtrTorch: mode {mode!r} needs a CTRConfig")
      self.ctr = build_torch(ctr_cfg)
      self.ctr_bias = nn.Parameter(torch.zeros(()))
    if mode != "id":
      if plm is None:
        raise ValueError(f"FlipCtrTorch: mode {mode!r} needs a PLM module")
      self.plm = plm
      self.txt_head = nn.Linear(plm.config.hidden_size, 1)
    if mode == "joint":
      self.alpha = nn.Parameter(torch.zeros(()))
      self.out_bias = nn.Parameter(torch.zeros(()))

  def mixing_weight(self) -> torch.Tensor:
    """α as used in the joint logit."""
    if self.alpha_param == "sigmoid":
      return torch.sigmoid(self.alpha)
    return self.alpha

  def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Logits of a batch.

    Args:
      batch: 'ids' [B, F] (id, joint) and 'input_ids', 'attention_mask'
        [B, L] (plm, joint); numpy arrays or tensors.

    Returns:
      {'logit', and 'ctr/logit' / 'txt/logit' / 'alpha' where they apply}.
    """
    dev = next(self.parameters()).device

    def get(key):
      if key not in batch:
        raise KeyError(f"FlipCtrTorch(mode={self.mode!r}): batch lacks "
                       f"{key!r} (has {sorted(batch)})")
      x = batch[key]
      if not isinstance(x, torch.Tensor):     # numpy, memmap, lists: copy
        x = torch.from_numpy(np.array(x))
      return x.to(dev).long()

    out = {}
    if self.mode != "plm":
      out["ctr/logit"] = self.ctr(get("ids"))["ctr/logit"] + self.ctr_bias
    if self.mode != "id":
      hidden = self.plm(input_ids=get("input_ids"),
                        attention_mask=get("attention_mask")).last_hidden_state
      out["txt/logit"] = self.txt_head(hidden[:, 0])[:, 0]
    if self.mode == "joint":
      a = self.mixing_weight()
      out["logit"] = (a * out["ctr/logit"] + (1.0 - a) * out["txt/logit"]
                      + self.out_bias)
      out["alpha"] = a
    else:
      out["logit"] = out["ctr/logit" if self.mode == "id" else "txt/logit"]
    return out

  @torch.no_grad()
  def predict_proba(self, batch: Mapping[str, Any]) -> torch.Tensor:
    """ŷ = sigmoid(logit) [B] (no gradients; call `.eval()` first)."""
    return torch.sigmoid(self(batch)["logit"])

  @classmethod
  def from_pretrained(cls, path, *, attn_implementation: str = "eager",
                      device: str = "cpu") -> "FlipCtrTorch":
    """Loads an `export_finetuned` folder; returns the model in eval mode.

    Args:
      path: the export folder (flip_ctr.json, ctr_model.safetensors, plm/).
      attn_implementation: transformers attention kernel of the PLM.
      device: torch device to load onto.

    Raises:
      FileNotFoundError / ValueError: a missing or inconsistent export.
    """
    path = pathlib.Path(path)
    meta = read_export_config(path)
    mode = meta["mode"]
    ctr_cfg = plm = None
    if mode != "plm":
      try:
        ctr_cfg = CTRConfig(**meta["ctr_config"])
      except TypeError as e:
        raise ValueError(f"{path / EXPORT_CONFIG}: bad ctr_config ({e})"
                         ) from e
    if mode != "id":
      import transformers  # pylint: disable=g-import-not-at-top
      # The folder also holds the MLM head (hf_export always writes it);
      # AutoModel does not use it, so only missing weights are an error.
      hf_log = transformers.logging
      verbosity, bars = hf_log.get_verbosity(), hf_log.is_progress_bar_enabled()
      hf_log.set_verbosity_error()
      hf_log.disable_progress_bar()
      try:
        plm, info = transformers.AutoModel.from_pretrained(
            str(path / PLM_DIR), attn_implementation=attn_implementation,
            output_loading_info=True)
      finally:
        hf_log.set_verbosity(verbosity)
        if bars:
          hf_log.enable_progress_bar()
      if info["missing_keys"]:
        raise ValueError(f"{path / PLM_DIR}: PLM weights missing "
                         f"{sorted(info['missing_keys'])[:8]}")
    model = cls(mode, ctr_cfg, plm, alpha_param=meta["alpha_param"])
    sd = load_file(str(path / CTR_WEIGHTS))
    rows = ctr_mapping.finetune_rows(mode, ctr_cfg)
    ctr_mapping.to_flax(rows, sd)     # strict key check with a clear error
    info = model.load_state_dict(sd, strict=False)
    missing = [k for k in info.missing_keys if not k.startswith("plm.")]
    if missing or info.unexpected_keys:
      raise ValueError(f"{path / CTR_WEIGHTS}: missing {missing[:8]}, "
                       f"unexpected {info.unexpected_keys[:8]}")
    return model.to(device).eval()


def read_export_config(path) -> dict[str, Any]:
  """Reads and checks ``flip_ctr.json`` of an export folder."""
  path = pathlib.Path(path)
  cfg_path = path / EXPORT_CONFIG
  if not cfg_path.exists():
    raise FileNotFoundError(f"{path}: no {EXPORT_CONFIG} (not an "
                            "export_finetuned folder?)")
  try:
    meta = json.loads(cfg_path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{cfg_path}: invalid JSON ({e})") from e
  if meta.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{cfg_path}: format_version "
                     f"{meta.get('format_version')!r} != {FORMAT_VERSION}")
  for key in ("mode", "alpha_param", "ctr_config"):
    if key not in meta:
      raise ValueError(f"{cfg_path}: missing field {key!r}")
  if meta["mode"] != "plm" and not meta["ctr_config"]:
    raise ValueError(f"{cfg_path}: mode {meta['mode']!r} needs 'ctr_config'")
  for need in ([CTR_WEIGHTS] + ([f"{PLM_DIR}/config.json"]
                                if meta["mode"] != "id" else [])):
    if not (path / need).exists():
      raise FileNotFoundError(f"{path}: missing {need}")
  return meta
