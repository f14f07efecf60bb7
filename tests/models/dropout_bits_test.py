"""PLMConfig.dropout_bits: cheaper dropout masks, and 32 bits unchanged."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from flip_jax.models.plm import PLMConfig
from flip_jax.models.plm import PLMEncoder
from flip_jax.models.plm import layers
from flip_jax.train import inputs
from experiments.configs import flip_finetune


def tiny(**kw) -> PLMConfig:
  return PLMConfig(model_type="bert", vocab_size=50, hidden_size=16,
                   num_layers=2, num_heads=2, intermediate_size=32,
                   max_position_embeddings=16, **kw)


def _drop(bits: int, rate: float, x, seed: int = 0):
  mod = layers.LowBitDropout(rate, bits)
  return mod.apply({}, x, False, rngs={"dropout": jax.random.key(seed)})


@pytest.mark.parametrize("bits", [8, 16])
def test_low_bit_rate_and_scale(bits):
  rate = 0.1
  x = jnp.ones((64, 50, 37))  # last axis not a multiple of 32 // bits
  y = np.asarray(_drop(bits, rate, x))
  threshold = round(rate * 2 ** bits)
  keep_prob = 1 - threshold / 2 ** bits
  kept = y != 0
  n = kept.size
  # Keep fraction within 5 binomial standard deviations of keep_prob.
  sd = np.sqrt(keep_prob * (1 - keep_prob) / n)
  assert abs(kept.mean() - keep_prob) < 5 * sd
  np.testing.assert_allclose(y[kept], 1 / keep_prob, rtol=1e-6)
  # Rows draw their own masks: at rate 0.5 no two of 200 rows of 37 agree
  # (two equal rows have probability 2**-37 each).
  rows = np.asarray(_drop(bits, 0.5, x)).reshape(-1, 37)[:200] != 0
  assert len({r.tobytes() for r in rows}) == len(rows)


def test_low_bit_is_identity_when_deterministic_and_differs_by_key():
  x = jnp.arange(24.0).reshape(2, 3, 4) + 1
  mod = layers.LowBitDropout(0.5, 8)
  np.testing.assert_array_equal(mod.apply({}, x, True), x)
  a, b = _drop(8, 0.5, x, 0), _drop(8, 0.5, x, 1)
  assert not np.array_equal(np.asarray(a), np.asarray(b))


def test_rate_rounding_to_one_drops_everything():
  x = jnp.ones((3, 5))
  np.testing.assert_array_equal(_drop(8, 0.999, x), jnp.zeros_like(x))


def test_32_bits_is_flax_dropout():
  """The default builds flax's own module: the masks of every run made
  before the option existed are unchanged."""
  assert type(layers.dropout(tiny(), 0.1)) is nn.Dropout
  assert type(layers.dropout(tiny(dropout_bits=16), 0.1)) is \
      layers.LowBitDropout


def test_encoder_with_low_bits_same_params_and_eval_output():
  ids = jnp.array([[2, 5, 7, 9, 0, 0], [3, 4, 6, 8, 10, 11]])
  mask = (ids > 0).astype(jnp.int32)
  enc32, enc8 = PLMEncoder(tiny()), PLMEncoder(tiny(dropout_bits=8))
  params = jax.jit(enc32.init)(jax.random.key(0), ids, mask)["params"]
  p8 = jax.eval_shape(enc8.init, jax.random.key(0), ids, mask)["params"]
  assert jax.tree.structure(params) == jax.tree.structure(p8)
  ev32 = jax.jit(enc32.apply)({"params": params}, ids, mask)["cls"]
  ev8 = jax.jit(enc8.apply)({"params": params}, ids, mask)["cls"]
  np.testing.assert_array_equal(ev32, ev8)
  rngs = {"dropout": jax.random.key(3)}

  def loss(p, enc):
    return enc.apply({"params": p}, ids, mask, deterministic=False,
                     rngs=rngs)["cls"].sum()
  tr32 = jax.jit(loss, static_argnums=1)(params, enc32)
  tr8, grads = jax.jit(jax.value_and_grad(loss), static_argnums=1)(params, enc8)
  assert float(tr32) != float(tr8)  # other masks
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_bad_bits_refused_by_config_and_model_config():
  with pytest.raises(ValueError, match="dropout_bits"):
    tiny(dropout_bits=12)
  cfg = flip_finetune.get_config("mode=joint,preset=tiny")
  assert cfg.model.plm.dropout_bits == 32
  cfg.model.plm.dropout_bits = 4
  assert inputs.model_errors(cfg.model) == [
      "model.plm.dropout_bits=4: expected one of [32, 16, 8]"]
