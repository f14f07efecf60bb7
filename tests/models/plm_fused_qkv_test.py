"""PLMConfig.fused_qkv: one matmul for query, key and value, same params.

With the flag on, the three projection kernels stay separate params
(query / key / value, as HF names them) and are concatenated at apply time:
the param tree and its initial values are those of the flag off, and the
outputs are equal to float tolerance, with and without dropout, in float32
and bfloat16, for BERT and RoBERTa. The 'cudnn' attention implementation is
a known config value (it runs on GPUs only).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flip_jax.models.plm import PLMConfig
from flip_jax.models.plm import PLMEncoder
from flip_jax.models.plm import PLMForMaskedLM
from tests.models.plm_encoder_test import batch
from tests.models.plm_encoder_test import tiny


def _init(cfg, ids, mask):
  return nn.meta.unbox(PLMEncoder(cfg).init(jax.random.key(0), ids, mask))


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_same_params_and_initial_values(model_type):
  cfg = tiny(model_type)
  ids, mask = batch(cfg)
  plain = _init(cfg, ids, mask)
  fused = _init(cfg.replace(fused_qkv=True), ids, mask)
  assert jax.tree.structure(plain) == jax.tree.structure(fused)
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(fused)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("model_type,dtype,tol", [
    ("bert", jnp.float32, 1e-5), ("roberta", jnp.float32, 1e-5),
    ("bert", jnp.bfloat16, 5e-2)])
def test_equal_outputs(model_type, dtype, tol):
  cfg = tiny(model_type)
  ids, mask = batch(cfg)
  variables = _init(cfg, ids, mask)
  outs = [PLMEncoder(cfg.replace(fused_qkv=f), dtype).apply(
      variables, ids, mask)["last_hidden_state"] for f in (False, True)]
  np.testing.assert_allclose(np.asarray(outs[0], np.float32),
                             np.asarray(outs[1], np.float32), atol=tol,
                             rtol=tol)


def test_equal_outputs_and_grads_with_dropout():
  """Training mode: the same dropout draws (same rng names) and grads."""
  cfg = tiny("bert")
  ids, mask = batch(cfg)
  params = nn.meta.unbox(PLMForMaskedLM(cfg).init(
      jax.random.key(0), ids, mask))["params"]

  def loss(p, fused):
    out = PLMForMaskedLM(cfg.replace(fused_qkv=fused)).apply(
        {"params": p}, ids, mask, deterministic=False,
        rngs={"dropout": jax.random.key(1)})
    return jnp.mean(out["logits"] ** 2)

  (l0, g0), (l1, g1) = (jax.value_and_grad(loss)(params, f)
                        for f in (False, True))
  np.testing.assert_allclose(l0, l1, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4)


def test_cudnn_is_a_known_attention_impl():
  assert tiny(attention_impl="cudnn").attention_impl == "cudnn"
  with pytest.raises(ValueError, match="attention_impl"):
    tiny(attention_impl="flash")
