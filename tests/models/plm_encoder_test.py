"""PLMEncoder / MLMHead unit tests: shapes, axes, masks, dropout, sharding."""
import functools
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from flip_jax import sharding
from flip_jax import sharding_rules
from flip_jax.models.plm import MLMHead
from flip_jax.models.plm import PLMConfig
from flip_jax.models.plm import PLMEncoder
from flip_jax.models.plm import PLMForMaskedLM
from flip_jax.models.plm import bert


def tiny(model_type="bert", **kw):
  base = dict(model_type=model_type, vocab_size=64, hidden_size=16,
              num_layers=2, num_heads=4, intermediate_size=32,
              max_position_embeddings=40, type_vocab_size=2,
              pad_token_id=1 if model_type == "roberta" else 0)
  base.update(kw)
  return PLMConfig(**base)


def batch(cfg, b=4, length=10, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, cfg.vocab_size, (b, length))
  lens = np.resize([length, 7, 3, 1], b)
  mask = (np.arange(length)[None] < lens[:, None]).astype(np.int32)
  ids = np.where(mask == 1, ids, cfg.pad_token_id)
  return jnp.asarray(ids, jnp.int32), jnp.asarray(mask)


def test_shapes_names_and_param_count():
  cfg = tiny()
  ids, mask = batch(cfg)
  variables = PLMEncoder(cfg).init(jax.random.key(0), ids, mask)
  flat = traverse_util.flatten_dict(nn.meta.unbox(variables["params"]),
                                    sep="/")
  assert flat["encoder/layer_0/attention/query/kernel"].shape == (16, 4, 4)
  assert flat["encoder/layer_1/attention/output/dense/kernel"].shape == (
      4, 4, 16)
  assert flat["encoder/layer_0/intermediate/dense/kernel"].shape == (16, 32)
  assert flat["embeddings/word_embeddings/embedding"].shape == (64, 16)
  h, m, v, p, t = 16, 32, 64, 40, 2
  per_layer = 4 * (h * h + h) + 2 * 2 * h + (h * m + m) + (m * h + h)
  expected = (v + p + t) * h + 2 * h + 2 * per_layer
  assert sum(x.size for x in flat.values()) == expected
  out = PLMEncoder(cfg).apply(variables, ids, mask)
  assert out["last_hidden_state"].shape == (4, 10, 16)
  np.testing.assert_array_equal(out["cls"], out["last_hidden_state"][:, 0])


def test_every_param_has_logical_axes():
  cfg = tiny()
  ids, mask = batch(cfg)
  tree = jax.eval_shape(
      lambda: PLMForMaskedLM(cfg).init(jax.random.key(0), ids, mask))
  leaves = jax.tree.leaves(tree["params"],
                           is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert len(leaves) == 4 + 1 + 2 * 16 + 5
  known = {n for n, _ in sharding_rules.DEFAULT_RULES} | {None}
  for leaf in leaves:
    assert isinstance(leaf, nn.Partitioned), leaf
    assert len(leaf.names) == leaf.value.ndim
    assert set(leaf.names) <= known
  specs = traverse_util.flatten_dict(nn.get_partition_spec(tree)["params"],
                                     sep="/")
  assert specs["encoder/encoder/layer_0/attention/query/kernel"] == (
      jax.sharding.PartitionSpec("embed", "heads", "kv"))
  assert specs["encoder/encoder/layer_0/output/dense/kernel"] == (
      jax.sharding.PartitionSpec("mlp", "embed"))


def test_roberta_positions_from_mask():
  cfg = tiny("roberta", pad_token_id=1)
  mask = jnp.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
  pos = bert.position_ids_from_mask(mask, cfg)
  np.testing.assert_array_equal(
      pos, [[2, 3, 4, 1, 1], [2, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
  pos = bert.position_ids_from_mask(mask, tiny())
  np.testing.assert_array_equal(pos[0], np.arange(5))


def test_padding_does_not_leak_and_full_padding_is_finite():
  cfg = tiny()
  ids, mask = batch(cfg)
  model = PLMEncoder(cfg)
  params = model.init(jax.random.key(0), ids, mask)
  # Changing padded tokens must not change any real token's state.
  ids2 = jnp.where(mask == 1, ids, 5)
  a = model.apply(params, ids, mask)["last_hidden_state"]
  b = model.apply(params, ids2, mask)["last_hidden_state"]
  np.testing.assert_allclose(a * mask[..., None], b * mask[..., None],
                             atol=1e-6)
  for dtype in (jnp.float32, jnp.bfloat16):
    out = PLMEncoder(cfg, dtype=dtype).apply(params, ids, jnp.zeros_like(mask))
    assert np.isfinite(np.asarray(out["last_hidden_state"], np.float32)).all()


def test_too_long_input_is_rejected():
  cfg = tiny("roberta", max_position_embeddings=12)
  ids, mask = batch(cfg, length=11)
  with pytest.raises(ValueError, match="exceeds the 10 positions"):
    PLMEncoder(cfg).init(jax.random.key(0), ids, mask)


def test_dropout_remat_and_bf16():
  cfg = tiny(num_layers=1, hidden_dropout=0.2, attention_dropout=0.2)
  ids, mask = batch(cfg)
  model = PLMEncoder(cfg)
  params = jax.jit(model.init)(jax.random.key(0), ids, mask)
  det = jax.jit(model.apply)(params, ids, mask)["last_hidden_state"]
  with pytest.raises(Exception, match="dropout"):
    model.apply(params, ids, mask, deterministic=False)
  rngs = {"dropout": jax.random.key(1)}
  train = jax.jit(functools.partial(model.apply, deterministic=False))
  d1 = train(params, ids, mask, rngs=rngs)
  d2 = train(params, ids, mask, rngs=rngs)
  np.testing.assert_array_equal(d1["cls"], d2["cls"])
  assert np.abs(np.asarray(d1["last_hidden_state"] - det)).max() > 1e-3

  def loss(p, m):
    out = m.apply(p, ids, mask, deterministic=False, rngs=rngs)
    return jnp.sum(out["last_hidden_state"] ** 2)

  grad = jax.jit(jax.grad(loss), static_argnums=1)
  g_plain = grad(params, model)
  g_remat = grad(params, PLMEncoder(cfg, remat=True))
  # Same math, different fusion: equal up to float32 rounding relative to
  # the gradient scale (key biases have exactly-zero true gradients, so only
  # rounding noise is left there).
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(g_plain))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, atol=1e-5 * scale), g_plain, g_remat)
  bf = jax.jit(PLMEncoder(cfg, dtype=jnp.bfloat16).apply)(params, ids, mask)
  assert bf["last_hidden_state"].dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(bf["last_hidden_state"], np.float32),
                             det, atol=0.1)


class _Parent(nn.Module):
  """How a bigger model (e.g. FLIP) embeds the encoder and a tied head."""
  cfg: PLMConfig

  @nn.compact
  def __call__(self, ids, mask, train):
    plm = PLMEncoder(self.cfg, name="plm")
    out = plm(ids, mask, deterministic=not train)
    logits = MLMHead(self.cfg, name="mlm_head")(
        out["last_hidden_state"], plm.word_embedding_matrix())
    return out["cls"], logits


def test_works_as_submodule_with_tied_decoder():
  cfg = tiny()
  ids, mask = batch(cfg)
  parent = _Parent(cfg)
  variables = parent.init(jax.random.key(0), ids, mask, False)
  flat = traverse_util.flatten_dict(nn.meta.unbox(variables["params"]),
                                    sep="/")
  assert "plm/encoder/layer_0/attention/query/kernel" in flat
  assert not any(k.startswith("mlm_head/decoder") for k in flat)
  cls, logits = parent.apply(variables, ids, mask, True,
                             rngs={"dropout": jax.random.key(3)})
  assert cls.shape == (4, 16) and logits.shape == (4, 10, 64)

  # Tied decoder: the word table gets gradient from the logits path too.
  def head_only(table):
    p = nn.meta.unbox(variables["params"])
    p["plm"]["embeddings"]["word_embeddings"]["embedding"] = table
    _, lg = parent.apply({"params": p}, ids, mask, False)
    return lg[:, :, 7].sum()
  g = jax.grad(head_only)(flat["plm/embeddings/word_embeddings/embedding"])
  assert np.abs(np.asarray(g[7])).sum() > 0


def test_masked_positions_logits_match_full():
  cfg = tiny()
  ids, mask = batch(cfg)
  model = PLMForMaskedLM(cfg)
  params = model.init(jax.random.key(0), ids, mask)
  full = model.apply(params, ids, mask)["logits"]
  pos = jnp.array([[0, 3], [1, 2], [0, 0], [0, 9]])
  part = model.apply(params, ids, mask, positions=pos)["logits"]
  np.testing.assert_allclose(part, jnp.take_along_axis(
      full, pos[..., None], axis=1), atol=1e-6)


@pytest.mark.multidevice
def test_sharded_forward_equals_unsharded():
  cfg = tiny(num_heads=2, intermediate_size=32)
  ids, mask = batch(cfg, b=8)
  model = PLMForMaskedLM(cfg)
  init = lambda: model.init(jax.random.key(0), ids, mask)
  params = init()
  expected = model.apply(params, ids, mask)
  mesh = sharding.make_mesh((("data", 4), ("fsdp", 1), ("tensor", 2)))
  rules = sharding_rules.DEFAULT_RULES
  abstract = jax.eval_shape(init)
  shardings = sharding.logical_to_sharding(abstract, mesh, rules)
  spec = shardings["params"]["encoder"]["encoder"]["layer_0"]["attention"][
      "query"]["kernel"].spec
  assert spec == jax.sharding.PartitionSpec(None, "tensor", None)
  with jax.set_mesh(mesh), nn.logical_axis_rules(
      sharding._filter_rules(rules, mesh)):  # pylint: disable=protected-access
    sharded = jax.jit(init, out_shardings=shardings)()
    wte = sharded["params"]["encoder"]["embeddings"]["word_embeddings"][
        "embedding"].value
    assert wte.sharding.spec == jax.sharding.PartitionSpec("tensor", None)
    batch_sh = sharding.batch_sharding(mesh, rules, 2)
    out = jax.jit(model.apply)(sharded, jax.device_put(ids, batch_sh),
                               jax.device_put(mask, batch_sh))
  for key in ("last_hidden_state", "logits"):
    np.testing.assert_allclose(out[key], expected[key], atol=1e-5)


def test_config_round_trip_and_errors():
  cfg = tiny("roberta", bos_token_id=0, eos_token_id=2)
  assert PLMConfig.from_hf(cfg.to_hf_dict()) == cfg
  with pytest.raises(ValueError, match="unsupported model_type 'gpt2'.*bert"):
    PLMConfig.from_hf(dict(cfg.to_hf_dict(), model_type="gpt2"))
  with pytest.raises(ValueError, match="relative_key"):
    PLMConfig.from_hf(dict(cfg.to_hf_dict(),
                           position_embedding_type="relative_key"))
  with pytest.raises(ValueError, match="lacks fields"):
    PLMConfig.from_hf({"model_type": "bert"})
  with pytest.raises(ValueError, match="not divisible"):
    tiny(num_heads=3)
  with pytest.raises(ValueError, match="hidden_act"):
    tiny(hidden_act="swish")


def test_fused_attention_matches_xla_and_refuses_attention_dropout():
  cfg = tiny(attention_dropout=0.0)
  fused_cfg = cfg.replace(attention_impl="fused")
  ids, mask = batch(cfg)
  params = PLMEncoder(cfg).init(jax.random.key(0), ids, mask)
  ref = PLMEncoder(cfg).apply(params, ids, mask)["last_hidden_state"]
  out = PLMEncoder(fused_cfg).apply(params, ids, mask)["last_hidden_state"]
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  full_pad = PLMEncoder(fused_cfg).apply(params, ids, jnp.zeros_like(mask))
  assert np.isfinite(np.asarray(full_pad["last_hidden_state"])).all()

  def loss(p, c):  # hidden dropout on: same keys, same masks on both paths
    h = PLMEncoder(c).apply(p, ids, mask, deterministic=False,
                            rngs={"dropout": jax.random.key(1)})
    return jnp.sum(h["last_hidden_state"] ** 2)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-5),
               jax.grad(loss)(params, cfg), jax.grad(loss)(params, fused_cfg))
  with pytest.raises(ValueError, match="attention_dropout=0"):
    PLMEncoder(tiny(attention_impl="fused")).apply(
        params, ids, mask, deterministic=False,
        rngs={"dropout": jax.random.key(1)})
  with pytest.raises(ValueError, match="attention_impl"):
    tiny(attention_impl="flash")
