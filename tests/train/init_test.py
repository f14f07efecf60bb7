"""The sharded state initialiser (flip_jax/train/init.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from flip_jax import sharding
from flip_jax import sharding_rules
from flip_jax.train import init as init_lib
from flip_jax.train import state as state_lib


_TRACES = []


class _Counted(nn.Module):
  """A tiny model that records each time Python traces it (in _TRACES)."""

  @nn.compact
  def __call__(self, x):
    _TRACES.append(x.shape)
    kernel_init = nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), ("embed", "mlp"))
    h = nn.Dense(6, kernel_init=kernel_init)(x)
    h = nn.BatchNorm(use_running_average=False)(h)
    return nn.Dense(1)(nn.relu(h))


@pytest.mark.parametrize("key_made_in_mesh", [False, True])
def test_the_model_init_is_traced_once_and_gives_the_plain_init(
    key_made_in_mesh):
  _TRACES.clear()
  model = _Counted()
  example = jnp.ones((4, 3))
  tx = optax.adam(1e-3)
  mesh = sharding.make_mesh()
  rules = sharding_rules.DEFAULT_RULES
  init = init_lib.sharded_state_init(
      lambda rng: model.init(rng, example),
      lambda p, ms, r: state_lib.create_train_state(p, tx, r, ms),
      tx, mesh, rules)
  made_outside = state_lib.new_key(3)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    key = state_lib.new_key(3) if key_made_in_mesh else made_outside
    state = init.init(key)
  # eval_shape traced the model; the jitted initialiser reused that trace.
  assert len(_TRACES) == 1
  want = nn.meta.unbox(model.init(key, example))
  jax.tree.map(np.testing.assert_array_equal,
               jax.device_get(state.params), want["params"])
  jax.tree.map(np.testing.assert_array_equal,
               jax.device_get(state.model_state["batch_stats"]),
               want["batch_stats"])
  assert (jax.tree.map(lambda a: (a.shape, a.dtype), init.abstract)
          == jax.tree.map(lambda a: (a.shape, a.dtype), state))
