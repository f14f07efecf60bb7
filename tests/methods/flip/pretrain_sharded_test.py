"""The sharded FLIP pretraining step (8 fake devices, AdamW) equals one device.

SGD: pretrain_sharded_sgd_test.py; micro-batches: microbatch_sharded_test.py
(one compile-heavy comparison per file, so that files spread over workers).
"""
import pytest
import jax
import numpy as np

from tests.methods.flip import flip_testlib as fst  # pylint: disable=g-bad-import-order

pytestmark = pytest.mark.multidevice  # 8 fake devices (conftest)


@fst.needs_8_devices
# slow: pretrain_sharded_sgd_test.py checks the same with SGD (stricter than Adam).
@pytest.mark.slow
def test_sharded_step_equals_single_device():
  batch = fst.random_batch(batch=8)
  l1, p1, _ = fst.run_steps(fst.MESH_ONE, batch)
  l8, p8, sh = fst.run_steps(fst.MESH_EIGHT_MIXED, batch)
  np.testing.assert_allclose(l1, l8, rtol=1e-5)
  # AdamW normalises updates, so float reduction-order noise in tiny
  # gradients can move a weight by ~lr * 1e-3.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=2e-5), p1, p8)
  # The rules really shard something: embedding rows and PLM mlp/heads.
  specs = [s.spec for s in jax.tree.leaves(sh.params)]
  assert any(any(ax is not None for ax in spec) for spec in specs)
