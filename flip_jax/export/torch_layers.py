"""PyTorch twins of the Flax CTR interaction layers (FLIP.md 3, 7).

Building blocks of `flip_jax.export.torch_backbones`: each computes the
forward pass of its namesake in `flip_jax.models` (DNN tower, cross
networks, self-attention, CIN, AFM attention, AFN's logarithmic layer);
parameter names are the torch side of `flip_jax.export.ctr_mapping`.
Parameters are placeholders until a mapped state dict is loaded.
"""
from __future__ import annotations

import itertools
import math

import torch
from torch import nn
from torch.nn import functional as F

ACTIVATIONS = {"relu": torch.relu, "gelu": F.gelu, "tanh": torch.tanh,
               "sigmoid": torch.sigmoid, "linear": lambda x: x}
BN_EPS = 1e-5                      # flip_jax.models.layers.TORCH_BN_EPS


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
