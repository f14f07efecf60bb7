"""SRP4CTR model: shared-K/V cross-attention vs a transcription, folding
(1 user x C candidates == C rows), the variants' params."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flip_jax.methods.srp4ctr import model as model_lib
from flip_jax.models import ctr as ctr_lib
from tests.methods.srp4ctr import srp_testlib as lib


def test_cross_attention_matches_a_direct_transcription():
  cfg = lib.model_config()
  model = model_lib.Srp4ctrModel(cfg)
  batch = lib.random_batch()
  params = lib.init(model, batch)
  got = jax.jit(functools.partial(model.apply, method=model.interest))(
      {"params": params}, batch)
  want = lib.np_cross(params, batch, cfg.seq.num_layers)
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_cross_attention_shares_the_encoder_key_value():
  model = model_lib.Srp4ctrModel(lib.model_config())
  batch = lib.random_batch()
  params = lib.init(model, batch)
  for l in range(2):
    assert set(params[f"cross_{l}"]) == {"query", "out", "ln_attn", "ffn_in",
                                         "ffn_out", "ln_ffn"}
  # The interest vector depends on the encoder's K/V kernels of every layer
  # (shared, so its gradient reaches them) ...
  grads = jax.jit(jax.grad(lambda p: jnp.sum(model.apply(
      {"params": p}, batch, method=model.interest) ** 2)))(params)
  for l in range(2):
    for kv in ("key", "value"):
      assert np.abs(grads["seq"][f"layers_{l}"][kv]["kernel"]).max() > 0
  # ... and a row with an empty history reads nothing through them.
  np.testing.assert_array_equal(batch["hist_mask"][0], 0)


@pytest.mark.parametrize("sequence,cross,queries", [
    ("fgbert", True, 4), ("din", False, 0), ("none", False, 0)])
def test_folded_equals_unfolded(sequence, cross, queries):
  model = model_lib.Srp4ctrModel(lib.model_config(sequence, cross, queries))
  c = 5
  rows = lib.random_batch(seed=3, batch=c)
  user = 2                                   # a non-empty history
  rows["hist"] = np.repeat(rows["hist"][user:user + 1], c, 0)
  rows["hist_mask"] = np.repeat(rows["hist_mask"][user:user + 1], c, 0)
  params = lib.init(model, rows)
  unfolded = jax.jit(model.apply)({"params": params}, rows)["logit"]
  request = {"hist": rows["hist"][:1], "hist_mask": rows["hist_mask"][:1],
             "ids": rows["ids"][None], "target": rows["target"][None]}
  folded = jax.jit(functools.partial(model.apply, method=model.folded))(
      {"params": params}, request)["logit"]
  assert folded.shape == (1, c)
  np.testing.assert_allclose(folded[0], unfolded, rtol=1e-5, atol=1e-6)


def test_variants_have_their_params_only():
  batch = lib.random_batch()
  tops = {}
  for name, args in {"srp4ctr": ("fgbert", True, 4),
                     "no_cross": ("fgbert", False, 4),
                     "no_queries": ("fgbert", True, 0),
                     "din": ("din", False, 0),
                     "backbone": ("none", False, 0)}.items():
    model = model_lib.Srp4ctrModel(lib.model_config(*args))
    shapes = jax.eval_shape(lambda m=model: m.init(
        {"params": jax.random.PRNGKey(0)}, batch))
    tops[name] = set(shapes["params"])
  assert tops["srp4ctr"] == {"ctr", "out_bias", "seq", "cross_0", "cross_1",
                             "interest_proj", "queries", "query_proj"}
  assert tops["no_cross"] == {"ctr", "out_bias", "seq", "queries",
                              "query_proj"}
  assert tops["no_queries"] == {"ctr", "out_bias", "seq", "cross_0",
                                "cross_1", "interest_proj"}
  assert tops["din"] == {"ctr", "out_bias", "din"}
  assert tops["backbone"] == {"ctr", "out_bias"}


def test_model_config_checks_the_extra_fields():
  cfg = lib.model_config()
  with pytest.raises(ValueError, match="num_extra_fields"):
    model_lib.ModelConfig(ctr=ctr_lib.CTRConfig("dcnv2", 50, 4), seq=cfg.seq)


def test_bfloat16_matmuls_stay_close_to_float32():
  cfg = lib.model_config(layers_=1)
  bf = dataclasses.replace(cfg, seq=lib.seq_config(layers_=1,
                                                   dtype="bfloat16"),
                           ctr=dataclasses.replace(cfg.ctr,
                                                   dtype="bfloat16"))
  batch = lib.random_batch()
  params = lib.init(model_lib.Srp4ctrModel(cfg), batch)
  f32, b16 = (jax.jit(model_lib.Srp4ctrModel(c).apply)({"params": params},
                                                       batch)["logit"]
              for c in (cfg, bf))
  assert b16.dtype == jnp.float32
  np.testing.assert_allclose(b16, f32, atol=0.05)
