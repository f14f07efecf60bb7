"""flip_jax.sharding: divisibility fallbacks on the 8 fake CPU devices."""
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax.sharding import NamedSharding, PartitionSpec as P, SingleDeviceSharding

from flip_jax import sharding

pytestmark = pytest.mark.multidevice  # 8 fake devices (conftest)

RULES = (("hidden_in", None), ("mlp", "tensor"), ("rows", ("data", "tensor")))


class _Params(nn.Module):
  """Params of chosen shapes and logical axis names."""
  specs: tuple  # ((name, shape, logical names), ...)

  @nn.compact
  def __call__(self):
    for name, shape, names in self.specs:
      self.param(name, nn.with_logical_partitioning(nn.initializers.ones,
                                                    names), shape)
    return None


@pytest.fixture(scope="module")
def mesh():
  if jax.device_count() < 8:
    pytest.skip("needs the 8 fake CPU devices of conftest.py")
  m = sharding.make_mesh((("data", 2), ("tensor", 4)), jax.devices()[:8])
  assert dict(m.shape) == {"data": 2, "tensor": 4}
  return m


def _abstract(specs):
  model = _Params(specs)
  return model, jax.eval_shape(model.init, jax.random.key(0))


SPECS = (("odd", (10, 6), ("hidden_in", "mlp")),     # 6 % 4 != 0
         ("even", (10, 8), ("hidden_in", "mlp")),    # 8 % 4 == 0
         ("rows_odd", (12, 3), ("rows", None)),      # 12 % (2*4) != 0
         ("rows_even", (16, 3), ("rows", None)))     # 16 % 8 == 0


def test_non_dividing_dim_is_replicated_reported_and_logged(mesh):
  model, abstract = _abstract(SPECS)
  logical = sharding.logical_to_sharding(abstract, mesh, RULES)
  p = logical["params"]
  assert p["odd"].spec == P(None, "tensor")
  assert p["rows_odd"].spec == P(("data", "tensor"), None)
  with mock.patch.object(sharding.logging, "warning") as warn:
    fixed = sharding.with_divisible_fallback(logical, abstract, mesh)
  q = fixed["params"]
  assert q["odd"].spec == P(None, None)
  assert q["rows_odd"].spec == P(None, None)
  # Dividing params keep their sharding.
  assert q["even"].spec == P(None, "tensor")
  assert q["rows_even"].spec == P(("data", "tensor"), None)
  # One warning for the call, naming every fallback.
  assert warn.call_count == 1
  fmt, *args = warn.call_args.args
  msg = fmt % tuple(args)
  for s in ("params/odd [10, 6] dim 1", "('tensor',)", "size 4",
            "params/rows_odd [12, 3] dim 0", "('data', 'tensor')", "size 8"):
    assert s in msg, (s, msg)
  assert "even" not in msg.replace("rows_odd", "")
  # The list of fallbacks is exposed too.
  assert sharding.divisible_fallbacks(logical, abstract, mesh) == [
      sharding.Fallback("params/odd", (10, 6), 1, ("tensor",), 4),
      sharding.Fallback("params/rows_odd", (12, 3), 0, ("data", "tensor"), 8),
  ]
  # The shardings are usable: init lands on the mesh as specified.
  params = jax.jit(lambda k: nn.meta.unbox(model.init(k)),
                   out_shardings=fixed)(jax.random.key(0))["params"]
  assert params["odd"].sharding.is_fully_replicated
  assert params["even"].addressable_shards[0].data.shape == (10, 2)
  assert params["rows_even"].addressable_shards[0].data.shape == (2, 3)
  np.testing.assert_array_equal(params["odd"], np.ones((10, 6)))


def test_no_fallback_no_warning(mesh):
  _, abstract = _abstract(SPECS[1::2])
  logical = sharding.logical_to_sharding(abstract, mesh, RULES)
  with mock.patch.object(sharding.logging, "warning") as warn:
    fixed = sharding.with_divisible_fallback(logical, abstract, mesh)
  warn.assert_not_called()
  assert sharding.divisible_fallbacks(logical, abstract, mesh) == []
  assert jax.tree.map(lambda s: s.spec, fixed) == jax.tree.map(
      lambda s: s.spec, logical)


def test_unboxed_abstract_and_other_shardings(mesh):
  # train/setup.py passes an already-unboxed ShapeDtypeStruct tree.
  abstract = {"a": jax.ShapeDtypeStruct((5, 4), jnp.float32),
              "b": jax.ShapeDtypeStruct((3,), jnp.float32)}
  single = SingleDeviceSharding(jax.devices()[0])
  shs = {"a": NamedSharding(mesh, P("data", "tensor")), "b": single}
  with mock.patch.object(sharding.logging, "warning") as warn:
    fixed = sharding.with_divisible_fallback(shs, abstract, mesh)
  assert fixed["a"].spec == P(None, "tensor")
  assert fixed["b"] is single
  assert warn.call_count == 1
  assert sharding.divisible_fallbacks(shs, abstract, mesh) == [
      sharding.Fallback("a", (5, 4), 0, ("data",), 2)]
