"""Tiny ClickPrompt fixtures shared by the tests (not a test module).

* ``plm_config`` / ``cp_config``: tiny BERT / RoBERTa and model configs;
* ``np_encoder``: a direct NumPy (float64) transcription of the BERT /
  RoBERTa encoder with per-layer key/value prefixes, position shift and
  input-layer prompts, the reference of the prefix tests;
* ``batch``: a random batch with every key any mode reads;
* ``run_steps``: sharded train steps of a task as the loop jits them.
"""
from __future__ import annotations

import functools
import math

import jax
import numpy as np
import optax
from flax import linen as nn

from experiments.configs import clickprompt_finetune
from experiments.configs import clickprompt_pretrain
from flip_jax import sharding
from flip_jax import sharding_rules
from flip_jax.methods.clickprompt import finetune
from flip_jax.methods.clickprompt import model as model_lib
from flip_jax.methods.clickprompt import pretrain
from flip_jax.models import ctr as ctr_lib
from flip_jax.models import plm as plm_lib
from flip_jax.train import ctr_task
from flip_jax.train import init as init_lib
from flip_jax.train import state as state_lib
from flip_jax.train import steps

F, FIELD, V, L, B = 4, 12, 50, 12, 8
N = F * FIELD
MASK = 3
MESH_ONE = [("data", 1), ("fsdp", 1), ("tensor", 1)]
MESH_EIGHT = [("data", 2), ("fsdp", 2), ("tensor", 2)]


def plm_config(model_type: str = "bert", dropout: float = 0.0,
               max_positions: int = 32) -> plm_lib.PLMConfig:
  return plm_lib.PLMConfig(
      model_type=model_type, vocab_size=V, hidden_size=16, num_layers=2,
      num_heads=2, intermediate_size=32,
      max_position_embeddings=max_positions, type_vocab_size=2,
      pad_token_id=1 if model_type == "roberta" else 0,
      hidden_dropout=dropout, attention_dropout=dropout)


def ctr_config() -> ctr_lib.CTRConfig:
  return ctr_lib.CTRConfig(name="dcnv2", num_features=N, num_fields=F,
                           embed_dim=4, dnn_hidden=(8, 8), cross_layers=2,
                           cross_type="full")


def cp_config(mode: str = "prefix_add", **kw) -> model_lib.ClickPromptConfig:
  base = dict(mode=mode, ctr=ctr_config(), plm=plm_config(), num_prompt=3,
              mlm_max_masked=6)
  base.update(kw)
  return model_lib.ClickPromptConfig(**base)


def batch(seed: int = 0, b: int = B, pad: int = 0) -> dict[str, np.ndarray]:
  rs = np.random.RandomState(seed)
  ids = np.arange(F) * FIELD + rs.randint(0, FIELD, size=(b, F))
  lengths = rs.randint(5, L + 1, size=b)
  mask = (np.arange(L)[None] < lengths[:, None]).astype(np.int32)
  tokens = np.where(mask > 0, rs.randint(5, V, size=(b, L)), pad)
  mlm_ids, labels = tokens.copy(), np.full((b, L), -100)
  for i in range(b):
    for j in rs.choice(np.arange(1, lengths[i]), 3, replace=False):
      labels[i, j] = tokens[i, j]
      mlm_ids[i, j] = MASK
  return {"ids": ids.astype(np.int32), "input_ids": tokens.astype(np.int32),
          "attention_mask": mask, "mlm_input_ids": mlm_ids.astype(np.int32),
          "mlm_labels": labels.astype(np.int32),
          "label": rs.randint(0, 2, size=b).astype(np.float32),
          "weight": np.ones(b, np.float32)}


def init(model, example, method=None, seed: int = 0):
  rng = jax.random.PRNGKey(seed)
  fn = jax.jit(lambda r: model.init({"params": r, "dropout": r}, example,
                                    method=method)["params"])
  return nn.meta.unbox(fn(rng))


# ------------------------------------------------------------ NumPy encoder
def _ln(x, p, eps):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


_erf = np.vectorize(math.erf)


def np_encoder(params, cfg: plm_lib.PLMConfig, ids, mask, *, prefix=None,
               offset: int = 0, prompts=None):
  """Every layer's output (float64) of the encoder; see the module doc."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  e = p["embeddings"]
  mask = np.asarray(mask)
  words = e["word_embeddings"]["embedding"][np.asarray(ids)]
  if prompts is not None:
    words = np.concatenate([np.asarray(prompts, np.float64), words], 1)
    mask = np.concatenate([np.ones((mask.shape[0], prompts.shape[1]),
                                   mask.dtype), mask], 1)
  b, t = mask.shape
  if cfg.model_type == "roberta":
    pos = (np.cumsum(mask, 1) + offset) * mask + cfg.pad_token_id
  else:
    pos = np.broadcast_to(np.arange(t) + offset, (b, t))
  x = (words + e["position_embeddings"]["embedding"][pos]
       + e["token_type_embeddings"]["embedding"][0])
  x = _ln(x, e["LayerNorm"], cfg.layer_norm_eps)
  keys = mask if prefix is None else np.concatenate(
      [np.ones((b, prefix[0][0].shape[2])), mask], 1)
  bias = np.where(keys[:, None, None, :] > 0, 0.0, -1e30)
  hidden = [x]
  for l in range(cfg.num_layers):
    lp = p["encoder"][f"layer_{l}"]
    a = lp["attention"]

    def proj(name, x=x, a=a):
      return np.einsum("bth,hnd->btnd", x, a[name]["kernel"]) + a[name]["bias"]
    q, k, v = proj("query"), proj("key"), proj("value")
    if prefix is not None:
      k = np.concatenate([np.swapaxes(np.asarray(prefix[l][0]), 1, 2), k], 1)
      v = np.concatenate([np.swapaxes(np.asarray(prefix[l][1]), 1, 2), v], 1)
    s = np.einsum("bqnd,bknd->bnqk", q, k) / math.sqrt(cfg.head_dim) + bias
    s = np.exp(s - s.max(-1, keepdims=True))
    probs = s / s.sum(-1, keepdims=True)
    ctx = np.einsum("bnqk,bknd->bqnd", probs, v)
    o = a["output"]
    h1 = _ln(np.einsum("bqnd,ndh->bqh", ctx, o["dense"]["kernel"])
             + o["dense"]["bias"] + x, o["LayerNorm"], cfg.layer_norm_eps)
    inter = h1 @ lp["intermediate"]["dense"]["kernel"] + lp[
        "intermediate"]["dense"]["bias"]
    inter = 0.5 * inter * (1.0 + _erf(inter / math.sqrt(2.0)))
    out = lp["output"]
    x = _ln(inter @ out["dense"]["kernel"] + out["dense"]["bias"] + h1,
            out["LayerNorm"], cfg.layer_norm_eps)
    hidden.append(x)
  return hidden


# ------------------------------------------------------------ sharded steps
def run_steps(task, example, consts, mesh_shape, num_steps: int = 2,
              micro_batches: int = 1, tx=None, seed: int = 0):
  """``num_steps`` jitted, sharded ``steps.train_step`` of ``task``.

  Returns:
    (per-step host metrics, host params).
  """
  n = int(np.prod([s for _, s in mesh_shape]))
  mesh = sharding.make_mesh(mesh_shape, jax.devices()[:n])
  rules = sharding_rules.DEFAULT_RULES
  tx = tx or optax.adamw(1e-2, weight_decay=1e-3)
  si = init_lib.sharded_state_init(
      lambda rng: task.init_variables(rng, example, consts),
      lambda p, ms, r: state_lib.create_train_state(p, tx, r, ms), tx, mesh,
      rules)
  keys = (pretrain.PRETRAIN_KEYS
          if isinstance(task, pretrain.ClickPromptPretrainTask)
          else task.model_keys() + ctr_task.LABEL_KEYS)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state = si.init(jax.random.PRNGKey(seed))
    batch_sh = {k: sharding.batch_sharding(mesh, rules, example[k].ndim)
                for k in keys}
    step = jax.jit(functools.partial(steps.train_step, task=task,
                                     micro_batches=micro_batches),
                   in_shardings=(si.shardings, batch_sh, {}),
                   out_shardings=(si.shardings, sharding.replicated(mesh)),
                   donate_argnums=0)
    gb = sharding.global_batch({k: example[k] for k in keys}, mesh, rules,
                               batch_sh)
    history = []
    for _ in range(num_steps):
      state, metrics = step(state, gb, {})
      history.append(jax.device_get(metrics))
  return history, jax.device_get(state.params)


def task_for(mode: str, dropout: float):
  """A task of the real (tiny-preset) config around a tiny model."""
  model = model_lib.ClickPromptModel(cp_config(
      mode, plm=plm_config(dropout=dropout)))
  if mode == "pretrain":
    return pretrain.ClickPromptPretrainTask(
        clickprompt_pretrain.get_config("preset=tiny"), model)
  return finetune.ClickPromptFinetuneTask(
      clickprompt_finetune.get_config(f"preset=tiny,mode={mode}"), model)


def assert_same_runs(h1, p1, h2, p2):
  """Equal losses per step and params, up to reduction-order noise."""
  np.testing.assert_allclose([h["train/loss"] for h in h1],
                             [h["train/loss"] for h in h2], rtol=1e-5)
  # AdamW normalises updates: reduction-order noise in tiny gradients can
  # move a weight by ~lr * 1e-3.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=2e-5), p1, p2)
