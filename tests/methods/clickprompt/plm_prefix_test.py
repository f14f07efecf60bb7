"""Prefix keys/values, position shift and input prompts in the shared PLM."""
import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from flip_jax.models import plm as plm_lib
from tests.methods.clickprompt import cp_testlib as lib

B, T, K = 3, 9, 4


def _inputs(cfg, seed=0):
  rs = np.random.RandomState(seed)
  lens = np.array([T, 6, 2])
  mask = (np.arange(T)[None] < lens[:, None]).astype(np.int32)
  ids = np.where(mask > 0, rs.randint(5, lib.V, (B, T)), cfg.pad_token_id)
  prefix = tuple(
      tuple(rs.normal(size=(B, cfg.num_heads, K, cfg.head_dim)).astype(
          np.float32) for _ in range(2)) for _ in range(cfg.num_layers))
  return jnp.asarray(ids, jnp.int32), jnp.asarray(mask), prefix


def _apply(cfg, params, ids, mask, remat=False, **kw):
  enc = plm_lib.PLMEncoder(cfg, remat=remat)
  fn = jax.jit(functools.partial(enc.apply, output_hidden_states=True, **kw))
  return fn({"params": params}, ids, mask)


@pytest.mark.parametrize("model_type,offset,remat", [
    ("bert", 0, False), ("bert", K, True), ("roberta", K, False)])
def test_prefix_attention_matches_numpy(model_type, offset, remat):
  cfg = lib.plm_config(model_type)
  ids, mask, prefix = _inputs(cfg)
  params = plm_lib.PLMEncoder(cfg).init(jax.random.key(1), ids, mask)[
      "params"]
  params = jax.tree.map(np.asarray, jax.device_get(
      jax.tree.map(lambda x: getattr(x, "value", x), params,
                   is_leaf=lambda x: hasattr(x, "value"))))
  out = _apply(cfg, params, ids, mask, remat, prefix=prefix,
               position_offset=offset)
  ref = lib.np_encoder(params, cfg, ids, mask, prefix=prefix, offset=offset)
  for ours, theirs in zip(out["hidden_states"], ref):
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
  assert out["last_hidden_state"].shape == (B, T, cfg.hidden_size)
  # The prefix is used: without it the outputs differ.
  plain = _apply(cfg, params, ids, mask)
  assert not np.allclose(plain["last_hidden_state"], out["last_hidden_state"],
                         atol=1e-3)


def test_input_prompts_match_numpy():
  cfg = lib.plm_config("roberta")
  ids, mask, _ = _inputs(cfg)
  params = jax.device_get(jax.tree.map(
      lambda x: getattr(x, "value", x),
      plm_lib.PLMEncoder(cfg).init(jax.random.key(2), ids, mask)["params"],
      is_leaf=lambda x: hasattr(x, "value")))
  prompts = np.random.RandomState(3).normal(size=(B, K, 16)).astype(
      np.float32)
  out = _apply(cfg, params, ids, mask, prompt_embeds=jnp.asarray(prompts))
  ref = lib.np_encoder(params, cfg, ids, mask, prompts=prompts)
  np.testing.assert_allclose(out["last_hidden_state"], ref[-1], rtol=1e-5,
                             atol=1e-5)
  assert out["last_hidden_state"].shape == (B, K + T, 16)


def test_k0_and_no_prefix_are_the_plain_encoder_bit_for_bit():
  cfg = lib.plm_config("bert", dropout=0.1)
  ids, mask, _ = _inputs(cfg)
  enc = plm_lib.PLMEncoder(cfg)
  variables = enc.init(jax.random.key(0), ids, mask)
  empty = tuple((jnp.zeros((B, 2, 0, 8)), jnp.zeros((B, 2, 0, 8)))
                for _ in range(2))
  rngs = {"dropout": jax.random.key(5)}
  for det in (True, False):
    plain = jax.jit(lambda v: enc.apply(v, ids, mask, deterministic=det,
                                        rngs=rngs))(variables)
    k0 = jax.jit(lambda v: enc.apply(v, ids, mask, deterministic=det,
                                     rngs=rngs, prefix=empty,
                                     position_offset=0))(variables)
    jax.tree.map(np.testing.assert_array_equal, plain, k0)
  # The same params as before the prefix support (no new variables).
  with_prefix = enc.init(jax.random.key(0), ids, mask, prefix=empty)
  jax.tree.map(np.testing.assert_array_equal, variables, with_prefix)


def test_overflowing_positions_are_a_clear_error():
  cfg = lib.plm_config("roberta", max_positions=T + 2 + K - 1)
  ids, mask, prefix = _inputs(cfg)
  enc = plm_lib.PLMEncoder(cfg)
  enc.init(jax.random.key(0), ids, mask, prefix=prefix)  # no shift: fits
  with pytest.raises(ValueError, match=r"length 9 \+ 4 prompt positions "
                     r"exceeds the 12 positions"):
    enc.init(jax.random.key(0), ids, mask, prefix=prefix, position_offset=K)
  with pytest.raises(ValueError, match="prefix tensors must be"):
    enc.init(jax.random.key(0), ids, mask,
             prefix=tuple((p[0][:, :1], p[1]) for p in prefix))


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_matches_hf_with_a_k_long_cache(model_type, tmp_path):
  """The official form: HF's encoder with the prefixes as its cache."""
  cls = {"bert": transformers.BertConfig,
         "roberta": transformers.RobertaConfig}[model_type]
  cfg = lib.plm_config(model_type)
  hf_cfg = cls(vocab_size=lib.V, hidden_size=16, num_hidden_layers=2,
               num_attention_heads=2, intermediate_size=32,
               max_position_embeddings=32, pad_token_id=cfg.pad_token_id,
               hidden_act="gelu")
  torch.manual_seed(0)
  hf = transformers.AutoModel.from_config(hf_cfg, add_pooling_layer=False)
  hf.save_pretrained(tmp_path)
  module, params, _ = plm_lib.load_pretrained(str(tmp_path))
  ids, mask, prefix = _inputs(module.config)
  ours = _apply(module.config, params, ids, mask, prefix=prefix,
                position_offset=K)["last_hidden_state"]
  cache = transformers.DynamicCache()
  for l, (k, v) in enumerate(prefix):
    cache.update(torch.tensor(k), torch.tensor(v), l)
  # transformers 5 renames past_key_values to cache.
  name = ("cache" if "cache" in inspect.signature(hf.forward).parameters
          else "past_key_values")
  with torch.no_grad():
    theirs = hf.eval()(
        input_ids=torch.tensor(np.asarray(ids)).long(),
        attention_mask=torch.cat([torch.ones(B, K, dtype=torch.long),
                                  torch.tensor(np.asarray(mask)).long()], 1),
        **{name: cache}).last_hidden_state.numpy()
  real = np.asarray(mask) > 0
  np.testing.assert_allclose(np.asarray(ours)[real], theirs[real], atol=1e-5)
