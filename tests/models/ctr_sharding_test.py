"""Row-sharded feature tables on 8 fake CPU devices == single device."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import NamedSharding, PartitionSpec as P

from experiments import train_ctr
from flip_jax import sharding
from flip_jax.models import ctr

N, F = 64, 4
CFG = ctr.CTRConfig(name="dcnv2", num_features=N, num_fields=F, embed_dim=8,
                    dnn_hidden=(16, 8), low_rank=4, num_experts=2)


def _mesh(fsdp):
  devices = jax.devices()[:fsdp]
  assert len(devices) == fsdp, "conftest must provide 8 fake CPU devices"
  return sharding.make_mesh([("data", 1), ("fsdp", fsdp), ("tensor", 1)],
                            devices)


def test_row_sharded_lookup_equals_unsharded():
  mesh = _mesh(8)
  emb = ctr.build(CFG)
  ids = jnp.asarray(np.random.RandomState(0).randint(0, N, (16, F)), jnp.int32)
  boxed = emb.init(jax.random.key(0), ids, method=emb.encode)
  sh = sharding.logical_to_sharding(boxed, mesh, sharding.DEFAULT_RULES)
  table_sh = sh["params"]["embedding"]["table"]
  assert table_sh.spec[0] == "fsdp"  # feature_vocab -> rows over 8 devices
  params = nn.meta.unbox(boxed)
  sharded = jax.device_put(params, sh)
  table = sharded["params"]["embedding"]["table"]
  assert {s.data.shape for s in table.addressable_shards} == {(N // 8, 8)}
  lookup = jax.jit(lambda p, i: emb.apply(p, i, method=emb.embed))
  np.testing.assert_array_equal(lookup(sharded, ids), lookup(params, ids))
  np.testing.assert_allclose(
      jax.jit(lambda p, i: emb.apply(p, i, method=emb.encode))(sharded, ids),
      emb.apply(params, ids, method=emb.encode), rtol=1e-5, atol=1e-7)


def _run(mesh, steps=2):
  model = ctr.CTRClassifier(CFG)
  tx = optax.adam(1e-2)
  state = train_ctr.init_state(model, tx, mesh, sharding.DEFAULT_RULES, F,
                               jax.random.key(0), jax.random.key(1))
  bsh = sharding.batch_sharding(mesh, sharding.DEFAULT_RULES)
  chunk = jax.jit(train_ctr.make_train_chunk(model, tx, ctr.preset("ctr_base"),
                                             "sum", bsh))
  rng = np.random.RandomState(0)
  repl = NamedSharding(mesh, P())
  ids = jax.device_put(rng.randint(0, N, (64, F)).astype(np.int32), repl)
  labels = jax.device_put((rng.rand(64) < 0.4).astype(np.float32), repl)
  idx = jnp.asarray(rng.permutation(64)[:steps * 16].reshape(steps, 16))
  state, sums = chunk(state, ids, labels, idx)
  return state, np.asarray(sums)


def test_sharded_train_step_equals_single_device():
  s8, l8 = _run(_mesh(8))
  s1, l1 = _run(_mesh(1))
  table = s8["params"]["ctr"]["embedding"]["table"]
  assert table.sharding.spec[0] == "fsdp"
  assert int(s8["step"]) == int(s1["step"]) == 2
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  flat8 = ctr.flat_params(jax.device_get(s8["params"]))
  flat1 = ctr.flat_params(jax.device_get(s1["params"]))
  assert flat8.keys() == flat1.keys()
  for k in flat1:
    np.testing.assert_allclose(flat8[k], flat1[k], rtol=1e-4, atol=1e-6,
                               err_msg=k)
  # Training moved the params at all.
  init = ctr.flat_params(jax.device_get(train_ctr.init_state(
      ctr.CTRClassifier(CFG), optax.adam(1e-2), _mesh(1),
      sharding.DEFAULT_RULES, F, jax.random.key(0),
      jax.random.key(1))["params"]))
  assert not np.allclose(init["ctr/head/kernel"], flat1["ctr/head/kernel"])
