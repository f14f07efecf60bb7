"""Tiny SRP4CTR fixtures and NumPy references shared by the tests.

Not a test module. ``model_config`` / ``pretrain_model_config`` give tiny
frozen configs; ``random_batch`` a CTR batch (some histories empty, left
padded); ``np_encoder`` / ``np_cross`` transcribe FG-BERT and the uni
cross-attention directly in NumPy from a params tree.
"""
from __future__ import annotations

import types

import jax
import numpy as np
from flax import linen as nn
from scipy import special

from flip_jax.methods.srp4ctr import fgbert
from flip_jax.methods.srp4ctr import layers
from flip_jax.methods.srp4ctr import model as model_lib
from flip_jax.models import ctr as ctr_lib

ATTRS = ("item", "genre", "year_title", "feedback")
VOCAB = (30, 8, 10, 4)
ITEM_ATTRS = (0, 1, 2)
L, F, N_FEAT, B = 12, 4, 50, 8


def seq_config(dropout: float = 0.0, layers_: int = 2,
               dtype: str = "float32") -> fgbert.SeqConfig:
  blk = layers.BlockConfig(hidden=16, heads=2, mlp=32, dropout=dropout,
                           attention_dropout=dropout, dtype=dtype)
  return fgbert.SeqConfig(blk, layers_, ATTRS, VOCAB, ITEM_ATTRS, L)


def model_config(sequence="fgbert", cross=True, queries=4, dropout=0.0,
                 ctr="dcnv2", layers_=2) -> model_lib.ModelConfig:
  queries = queries if sequence == "fgbert" else 0
  fx = model_lib.extra_fields(types.SimpleNamespace(
      sequence=sequence, cross_attention=cross, num_queries=queries))
  return model_lib.ModelConfig(
      ctr=ctr_lib.CTRConfig(ctr, N_FEAT, F, embed_dim=8, dnn_hidden=(16,),
                            low_rank=4, num_experts=2, num_extra_fields=fx,
                            dropout=dropout),
      seq=seq_config(dropout, layers_), sequence=sequence,
      cross_attention=cross,
      num_queries=queries)


def random_batch(seed: int = 0, batch: int = B) -> dict[str, np.ndarray]:
  rs = np.random.RandomState(seed)
  lengths = rs.randint(0, L + 1, size=batch)
  lengths[0] = 0                                  # an empty history
  mask = (np.arange(L)[None] >= L - lengths[:, None]).astype(np.int32)
  hist = np.stack([rs.randint(0, v, size=(batch, L)) for v in VOCAB], -1)
  hist = np.where(mask[..., None] > 0, hist, 0).astype(np.int32)
  target = np.stack([rs.randint(2, VOCAB[a], size=batch)
                     for a in ITEM_ATTRS], -1).astype(np.int32)
  return {"ids": rs.randint(0, N_FEAT, size=(batch, F)).astype(np.int32),
          "hist": hist, "hist_mask": mask, "target": target,
          "label": rs.randint(0, 2, size=batch).astype(np.float32),
          "weight": np.ones(batch, np.float32)}


def init(model, batch, seed: int = 0):
  fn = jax.jit(lambda rng: model.init({"params": rng, "dropout": rng},
                                      batch)["params"])
  return nn.meta.unbox(fn(jax.random.PRNGKey(seed)))


# ------------------------------------------------------- NumPy references
def _ln(x, p):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + layers.LN_EPS) * p["scale"] + p["bias"]


def _gelu(x):
  return 0.5 * x * (1.0 + special.erf(x / np.sqrt(2.0)))


def _heads(x, p):
  return np.einsum("...d,dhk->...hk", x, p["kernel"]) + p["bias"]


def np_layer(x, k, v, mask, p):
  """CrossLayer: x [..., Q, d], k/v [..., K, H, d_h], mask [..., K]."""
  q = _heads(x, p["query"])
  s = np.einsum("...qhd,...khd->...hqk", q, k) / np.sqrt(q.shape[-1])
  keep = (mask > 0)[..., None, None, :]
  s = np.where(keep, s, -1e9)
  pr = np.exp(s - s.max(-1, keepdims=True))
  pr = pr / pr.sum(-1, keepdims=True) * keep
  a = np.einsum("...hqk,...khd->...qhd", pr, v)
  x = _ln(x + np.einsum("...hk,hkd->...d", a, p["out"]["kernel"])
          + p["out"]["bias"], p["ln_attn"])
  h = _gelu(x @ p["ffn_in"]["kernel"] + p["ffn_in"]["bias"])
  return _ln(x + h @ p["ffn_out"]["kernel"] + p["ffn_out"]["bias"],
             p["ln_ffn"])


def np_encoder(seq_params, hist, mask, num_layers):
  """FG-BERT forward: (states, [(K_l, V_l)])."""
  e = seq_params["embed"]
  x = sum(e[f"attr_{a}"][hist[..., i]] for i, a in enumerate(ATTRS))
  x = _ln(x + e["position"][:hist.shape[-2]], e["ln"])
  kvs = []
  for l in range(num_layers):
    p = seq_params[f"layers_{l}"]
    k, v = _heads(x, p["key"]), _heads(x, p["value"])
    kvs.append((k, v))
    x = np_layer(x, k, v, mask, p)
  return x, kvs


def np_cross(params, batch, num_layers):
  """The uni cross-attention output t_L [B, d], transcribed from B3."""
  p = jax.tree.map(np.asarray, params)
  _, kvs = np_encoder(p["seq"], batch["hist"], batch["hist_mask"],
                      num_layers)
  e = p["seq"]["embed"]
  t = sum(e[f"attr_{ATTRS[a]}"][batch["target"][:, i]]
          for i, a in enumerate(ITEM_ATTRS))
  t = _ln(t, e["ln"])[:, None]                         # [B, 1, d]
  for l, (k, v) in enumerate(kvs):
    t = np_layer(t, k, v, batch["hist_mask"], p[f"cross_{l}"])
  return t[:, 0]


# ------------------------------------------------------- loop-level runs
def set_fields(cfg, values: dict):
  """Sets dotted config fields ('train.max_steps') in place; returns cfg."""
  for key, value in values.items():
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return cfg


def tiny_overrides(cache_dir) -> dict:
  """Tiny synthetic data and sizes for loop runs."""
  return {"data.cache_dir": str(cache_dir), "sequence.max_length": 8,
          "sequence.pretrain_stride": 8, "model.seq.hidden": 8,
          "model.seq.mlp": 16, "model.seq.layers": 1,
          "data.synthetic.num_users": 40, "data.synthetic.num_movies": 30,
          "data.synthetic.num_ratings": 600, "ckpt.async_save": False}


def train(cfg, workdir):
  # pylint: disable=g-import-not-at-top
  from flip_jax import methods
  from flip_jax.train import loop
  return loop.train_and_evaluate(cfg, str(workdir), methods.make_task(cfg))


def read_metrics(workdir):
  import json  # pylint: disable=g-import-not-at-top
  with open(f"{workdir}/metrics.jsonl") as f:
    return [json.loads(line) for line in f]


def final_params(workdir):
  from flip_jax import checkpoint  # pylint: disable=g-import-not-at-top
  step = checkpoint.Checkpointer(str(workdir), max_to_keep=None,
                                 save_interval_steps=1).latest_step()
  return step, checkpoint.restore_params(str(workdir), step=step)
