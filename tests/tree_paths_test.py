"""flip_jax.tree_paths: '/'-joined param paths, both flattenings."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax import traverse_util

from flip_jax import optim
from flip_jax import tree_paths
from flip_jax.export import ctr_mapping
from flip_jax.models import ctr


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class _State:
  params: dict
  step: int


def _paths(tree):
  return [p for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def test_path_str_and_key_str_name_every_entry():
  tree = _State(params={"b": [jnp.zeros(1), jnp.ones(2)], "a": jnp.zeros(3)},
                step=0)
  got = [tree_paths.path_str(p) for p in _paths(tree)]
  assert got == ["params/a", "params/b/0", "params/b/1", "step"]
  entries = _paths(tree)[1]
  assert [tree_paths.key_str(k) for k in entries] == ["params", "b", "0"]
  assert tree_paths.path_str(()) == ""


def test_param_paths_is_pytree_order_with_indices():
  tree = {"z": {"k": 1}, "a": {"b": 2, "c": [3, 4]}}
  assert list(tree_paths.param_paths(tree)) == ["a/b", "a/c/0", "a/c/1",
                                                "z/k"]
  assert tree_paths.param_paths(tree)["a/c/1"] == 4
  # optim keeps exporting the same functions.
  assert optim.param_paths is tree_paths.param_paths
  assert optim.path_str is tree_paths.path_str


def test_dict_keys_drop_indices_to_match_optimizer_leaves():
  params = {"dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)}}
  opt_state = optax.chain(optax.clip(1.0), optax.adam(1e-3)).init(params)
  keyed = {"/".join(tree_paths.dict_keys(p)): leaf for p, leaf in
           jax.tree_util.tree_flatten_with_path(opt_state)[0]}
  # Adam's moments end with the param's path; the count has no dict key.
  assert keyed["mu/dense/kernel"].shape == (2, 3)
  assert keyed["nu/dense/bias"].shape == (3,)
  assert "count" in keyed
  full = [tree_paths.path_str(p) for p in _paths(opt_state)]
  assert "1/0/mu/dense/kernel" in full  # path_str keeps the indices
  assert tree_paths.dict_keys(_paths({"a": [{"b": 1}]})[0]) == ["a", "b"]


def test_flatten_is_insertion_order_and_unflatten_inverts_it():
  tree = {"params": {"z": {"kernel": 1}, "a": {"bias": 2}},
          "batch_stats": {"bn": {"mean": 3}}, "empty": {}}
  flat = tree_paths.flatten(tree)
  assert list(flat) == ["params/z/kernel", "params/a/bias",
                        "batch_stats/bn/mean"]
  back = tree_paths.unflatten(flat)
  assert back == {k: v for k, v in tree.items() if k != "empty"}
  assert tree_paths.flatten({"a": 1}, prefix="p/") == {"p/a": 1}
  assert tree_paths.unflatten({}) == {}
  # The export table and the CTR models share the one implementation.
  assert ctr_mapping.flatten is tree_paths.flatten
  assert ctr_mapping.unflatten is tree_paths.unflatten
  assert ctr.flat_params is tree_paths.flat_params


def test_flat_params_unboxes_and_matches_flax():
  class M(nn.Module):

    @nn.compact
    def __call__(self, x):
      x = nn.Dense(4, kernel_init=nn.with_logical_partitioning(
          nn.initializers.lecun_normal(), ("embed", "mlp")), name="up")(x)
      return nn.LayerNorm(name="ln")(x)

  params = M().init(jax.random.key(0), jnp.ones((1, 3)))["params"]
  assert isinstance(params["up"]["kernel"], nn.Partitioned)
  flat = tree_paths.flat_params(params)
  want = traverse_util.flatten_dict(nn.meta.unbox(params), sep="/")
  assert list(flat) == list(want)  # same order as flax's own flattening
  assert sorted(flat) == ["ln/bias", "ln/scale", "up/bias", "up/kernel"]
  for k in want:
    assert not isinstance(flat[k], nn.Partitioned)
    np.testing.assert_array_equal(flat[k], want[k])
