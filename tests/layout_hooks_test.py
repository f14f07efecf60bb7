"""One layout Hook type and call convention for both Flax <-> torch tables."""
import numpy as np

from flip_jax import layout_hooks
from flip_jax.export import ctr_mapping
from flip_jax.export import torch_mapping
from flip_jax.models import plm
from flip_jax.models.plm import hf_names


def test_both_tables_use_the_one_hook_type():
  assert not hasattr(torch_mapping, "HOOKS")  # the table lives in models
  for table in (hf_names.HOOKS, ctr_mapping.HOOKS):
    for name, hook in table.items():
      assert type(hook) is layout_hooks.Hook, name
      assert hook.name == name
  assert ctr_mapping.Hook is hf_names.Hook is layout_hooks.Hook
  # The config-free hooks are shared objects.
  for name in ("identity", "transpose"):
    assert ctr_mapping.HOOKS[name] is hf_names.HOOKS[name]


def test_ctr_hooks_take_array_and_cfg_and_are_exact_inverses():
  rng = np.random.default_rng(0)
  shapes = {"identity": (7, 3), "transpose": (5, 3), "conv1d": (6, 4)}
  torch_shapes = {"identity": (7, 3), "transpose": (3, 5), "conv1d": (4, 6, 1)}
  cfg = plm.PLMConfig("bert", 50, 12, 1, 3, 20, 16)  # ignored by CTR hooks
  for name, hook in ctr_mapping.HOOKS.items():
    x = rng.normal(size=shapes[name]).astype(np.float32)
    for c in (None, cfg):
      t = hook.to_torch(x, c)
      assert t.shape == torch_shapes[name], name
      np.testing.assert_array_equal(hook.to_flax(t, c), x)
    # cfg may be left out by config-free hooks.
    np.testing.assert_array_equal(hook.to_torch(x), hook.to_torch(x, None))
