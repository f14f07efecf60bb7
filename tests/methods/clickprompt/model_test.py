"""ClickPrompt model: PA-MLM loss vs NumPy, the α mix, modes, sizes, groups."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from experiments.configs import clickprompt_finetune
from experiments.configs import clickprompt_pretrain
from flip_jax import optim
from flip_jax import tree_paths
from flip_jax.methods.clickprompt import common
from flip_jax.methods.clickprompt import model as model_lib
from flip_jax.methods.clickprompt import prompt as prompt_lib
from flip_jax.models import ctr as ctr_lib
from tests.methods.clickprompt import cp_testlib as lib


def _q(model, params, ids):
  fn = jax.jit(lambda p: model.apply({"params": p}, ids,
                                     method=lambda m, x: m.ctr.encode(x)))
  return np.asarray(fn(params), np.float64)


def _np_prefix(params, q, cfg):
  g = jax.tree.map(lambda a: np.asarray(a, np.float64),
                   params["prompt_generator"])
  h = np.tanh(q @ g["hidden"]["kernel"] + g["hidden"]["bias"])
  p = np.einsum("bd,dklnh->bklnh", h, g["out"]["kernel"]) + g["out"]["bias"]
  return p, [(p[:, :, 2 * l].transpose(0, 2, 1, 3),
              p[:, :, 2 * l + 1].transpose(0, 2, 1, 3))
             for l in range(cfg.num_layers)]


@pytest.mark.parametrize("model_type,tied,fusion", [
    ("bert", False, "prefix"), ("roberta", True, "prefix"),
    ("bert", False, "prompt")])
def test_pa_mlm_loss_matches_numpy(model_type, tied, fusion):
  cp = lib.cp_config("pretrain", plm=lib.plm_config(model_type),
                     lm_tied=tied, mlm_max_masked=lib.L, fusion=fusion)
  model = model_lib.ClickPromptModel(cp)
  batch = lib.batch(pad=cp.plm.pad_token_id)
  params = lib.init(model, batch, method="pa_mlm")
  assert ("lm_decoder" in params) == (not tied)
  out = jax.jit(lambda p: model.apply({"params": p}, batch,
                                      method="pa_mlm"))(params)
  q = _q(model, params, batch["ids"])
  if fusion == "prefix":
    _, prefix = _np_prefix(params, q, cp.plm)
    h = lib.np_encoder(params["plm"], cp.plm, batch["mlm_input_ids"],
                       batch["attention_mask"], prefix=prefix,
                       offset=cp.num_prompt)[-1]
  else:  # K input-layer prompts q W + b in front; their outputs unlabelled
    g = params["prompt_generator"]["out"]
    prompts = np.einsum("bf,fkd->bkd", q, g["kernel"]) + g["bias"]
    h = lib.np_encoder(params["plm"], cp.plm, batch["mlm_input_ids"],
                       batch["attention_mask"],
                       prompts=prompts)[-1][:, cp.num_prompt:]
  head = jax.tree.map(lambda a: np.asarray(a, np.float64), params["lm_head"])
  x = h @ head["dense"]["kernel"] + head["dense"]["bias"]
  x = 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
  mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  x = ((x - mu) / np.sqrt(var + cp.plm.layer_norm_eps)
       * head["LayerNorm"]["scale"] + head["LayerNorm"]["bias"])
  table = (params["plm"]["embeddings"]["word_embeddings"]["embedding"]
           if tied else params["lm_decoder"])
  logits = x @ np.asarray(table, np.float64).T + head["bias"]
  logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(
      -1, keepdims=True)) - logits.max(-1, keepdims=True)
  labels = batch["mlm_labels"]
  sel = labels != -100
  want = -np.mean(np.take_along_axis(logp, np.where(sel, labels, 0)[..., None],
                                     -1)[..., 0][sel])
  np.testing.assert_allclose(out["mlm_loss"], want, rtol=1e-5)
  assert out["mlm_masked_tokens"] == sel.sum() and out["mlm_dropped"] == 0
  # Gradients reach the CTR embeddings and the generator (the alignment).
  grads = jax.jit(jax.grad(lambda p: model.apply(
      {"params": p}, batch, method="pa_mlm")["loss"]))(params)
  for part in ("ctr", "prompt_generator"):
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(
        grads[part])) > 0


def test_alpha_mix_and_plain_sum():
  batch = lib.batch()
  cp = lib.cp_config("prefix_add")
  model = model_lib.ClickPromptModel(cp)
  params = lib.init(model, batch)
  assert float(params["alpha"]) == 0.5
  params = dict(params, alpha=jnp.float32(0.2))
  fwd = jax.jit(lambda p: model.apply({"params": p}, batch))
  out = fwd(params)
  np.testing.assert_allclose(out["logit"], 0.2 * out["ctr/logit"]
                             + 0.8 * out["txt/logit"], rtol=1e-6)
  d_alpha = jax.jit(jax.grad(lambda a: model.apply(
      {"params": dict(params, alpha=a)}, batch)["logit"].sum()))(
          jnp.float32(0.2))
  np.testing.assert_allclose(d_alpha, np.sum(out["ctr/logit"]
                                             - out["txt/logit"]), rtol=1e-5)
  # Same params without alpha: the code's plain sum, and a constant α.
  rest = {k: v for k, v in params.items() if k != "alpha"}
  plain = model_lib.ClickPromptModel(lib.cp_config("prefix_add",
                                                   weighted_add=False))
  o2 = jax.jit(plain.apply)({"params": rest}, batch)
  np.testing.assert_allclose(o2["logit"], out["ctr/logit"] + out["txt/logit"],
                             rtol=1e-6)
  fixed = model_lib.ClickPromptModel(lib.cp_config(
      "prefix_add", alpha_learnable=False, alpha_init=0.3))
  o3 = jax.jit(fixed.apply)({"params": rest}, batch)
  np.testing.assert_allclose(o3["logit"], 0.3 * out["ctr/logit"]
                             + 0.7 * out["txt/logit"], rtol=1e-6)
  for m in (plain, fixed):  # neither has an alpha parameter
    shapes = jax.eval_shape(lambda m=m: m.init(jax.random.key(0), batch))
    assert "alpha" not in shapes["params"]


def test_ctr_only_is_the_plain_backbone_plus_a_head():
  batch = lib.batch()
  cp = lib.cp_config("ctr_only", plm=None)
  model = model_lib.ClickPromptModel(cp)
  params = lib.init(model, {"ids": batch["ids"]})
  assert set(params) == {"ctr", "ctr_head"}
  backbone = ctr_lib.build(cp.ctr)
  plain = nn.meta.unbox(backbone.init(jax.random.key(0), batch["ids"],
                                      method="encode"))
  assert (jax.tree.map(np.shape, params["ctr"])
          == jax.tree.map(np.shape, plain["params"]))
  q = _q(model, params, batch["ids"])
  assert q.shape == (lib.B, ctr_lib.rep_dim(cp.ctr))
  want = q @ params["ctr_head"]["kernel"][:, 0] + params["ctr_head"]["bias"][0]
  np.testing.assert_allclose(model.apply({"params": params}, batch)["logit"],
                             want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("usage", ["avg", "cat"])
def test_prompt_usage_reads_the_prompts(usage):
  batch = lib.batch()
  cp = lib.cp_config("prefix_add", prompt_usage=usage, pooler="avg_top2")
  model = model_lib.ClickPromptModel(cp)
  params = lib.init(model, batch)
  p, _ = _np_prefix(params, _q(model, params, batch["ids"]), cp.plm)
  vecs = p.reshape(lib.B, -1, 16)          # K * 2L vectors of width d
  assert vecs.shape[1] == cp.num_prompt * 2 * cp.plm.num_layers
  feats = vecs.mean(1) if usage == "avg" else vecs.reshape(lib.B, -1)
  assert params["ctr_head"]["kernel"].shape == (feats.shape[1], 1)
  want = feats @ params["ctr_head"]["kernel"][:, 0] + params["ctr_head"][
      "bias"][0]
  out = jax.jit(model.apply)({"params": params}, batch)
  np.testing.assert_allclose(out["ctr/logit"], want, rtol=1e-4, atol=1e-5)


def test_generator_size_and_position_check():
  # RoBERTa-base (d 768, 12 layers), DCNv2 q of 512, K = 10: 141.7M in W2.
  sizes = prompt_lib.generator_size(512, 768, 12, 10)
  assert sizes["out"] == 768 * 184320 + 184320
  assert round(sizes["out"] / 1e6, 1) == 141.7
  cp = lib.cp_config("prefix_add")
  model = model_lib.ClickPromptModel(cp)
  params = lib.init(model, lib.batch())
  # W2's output is sharded over 'heads', like the PLM's attention.
  spec = nn.get_partition_spec(jax.eval_shape(
      lambda: model.init(jax.random.key(0), lib.batch())))
  assert tuple(spec["params"]["prompt_generator"]["out"]["kernel"]) == (
      "embed", None, None, "heads", "kv")
  n = sum(np.size(x) for x in jax.tree.leaves(params["prompt_generator"]))
  assert n == sum(prompt_lib.generator_size(ctr_lib.rep_dim(cp.ctr), 16, 2,
                                            3).values())
  common.check_positions(cp, 32 - cp.num_prompt)
  with pytest.raises(ValueError, match="data.max_length=30 \\+ 3 prompt"):
    common.check_positions(cp, 30)
  common.check_positions(lib.cp_config("prefix_add", shift_positions=False),
                         32)
  with pytest.raises(ValueError, match="prompt_usage='avg' needs prompts"):
    lib.cp_config("add", prompt_usage="avg")


def _labels(config, params):
  return tree_paths.flatten(optim.param_labels(config.optim, params))


def test_optimizer_groups_quirk_and_frozen_plm():
  params = {"ctr": {"embedding": {"table": 0}, "cross": {"bias_0": 0,
                                                         "kernel_0": 0}},
            "prompt_generator": {"out": {"kernel": 0, "bias": 0}},
            "plm": {"x": {"LayerNorm": {"scale": 0, "bias": 0},
                          "dense": {"kernel": 0}}},
            "lm_head": {"bias": 0}, "lm_decoder": 0}
  cfg = clickprompt_pretrain.get_config("preset=tiny")
  common.resolve_optimizer(cfg, "pretrain")
  lab = _labels(cfg, params)
  assert lab["ctr/embedding/table"] == lab["prompt_generator/out/bias"] == (
      "default")
  assert lab["plm/x/dense/kernel"] == lab["lm_decoder"] == "plm"
  assert lab["plm/x/LayerNorm/scale"] == "plm"
  cfg = clickprompt_pretrain.get_config("preset=full")
  cfg.optim.reproduce_bias_ln_lr_quirk = True
  common.resolve_optimizer(cfg, "pretrain")
  common.resolve_optimizer(cfg, "pretrain")          # idempotent
  assert len(cfg.optim.param_groups) == 2
  lab = _labels(cfg, params)
  for p in ("ctr/cross/bias_0", "plm/x/LayerNorm/scale", "plm/x/LayerNorm/bias",
            "lm_head/bias", "prompt_generator/out/bias"):
    assert lab[p] == "bias_ln_quirk", p
  assert lab["plm/x/dense/kernel"] == "plm"
  ft = clickprompt_finetune.get_config("mode=ctr_only")
  common.resolve_optimizer(ft, "ctr_only")
  assert ft.optim.param_groups == [] and ft.optim.freeze == []
  ft = clickprompt_finetune.get_config("mode=prefix_add")
  ft.optim.groups.plm.lr = 0.0
  common.resolve_optimizer(ft, "prefix_add")
  assert ft.optim.freeze == [ft.optim.groups.plm.regex]


def test_post_init_takes_the_lm_head_and_draws_xavier_ctr():
  task = lib.task_for("pretrain", dropout=0.0)
  batch = lib.batch()
  params = lib.init(task.model, batch, method="pa_mlm")
  rs = np.random.RandomState(0)
  ckpt = jax.tree.map(lambda a: rs.normal(size=np.shape(a)).astype(
      np.float32), {"encoder": params["plm"], "mlm_head": params["lm_head"]})

  def put(tree, path, value):
    out = dict(tree)
    node = out
    for p in path[:-1]:
      node[p] = dict(node[p])
      node = node[p]
    node[path[-1]] = value
    return out

  data = type("Data", (), {"extra": {"plm_params": ckpt}})()
  new, _, _ = task.post_init(params, {}, put, data)
  jax.tree.map(np.testing.assert_array_equal, new["lm_head"],
               ckpt["mlm_head"])
  np.testing.assert_array_equal(
      new["lm_decoder"],
      ckpt["encoder"]["embeddings"]["word_embeddings"]["embedding"])
  table = new["ctr"]["embedding"]["table"]
  n, e = table.shape
  assert abs(np.std(table) / np.sqrt(2.0 / (n + e)) - 1.0) < 0.15
  assert not np.any(new["ctr"]["cross"]["bias_0"])
