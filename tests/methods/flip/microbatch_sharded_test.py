"""The sharded, micro-batched FLIP pretraining step == one device's whole
batch step."""
import jax
import pytest
import numpy as np
import optax

from tests.methods.flip import flip_testlib as fst  # pylint: disable=g-bad-import-order

pytestmark = pytest.mark.multidevice  # 8 fake devices (conftest)


@fst.needs_8_devices
# slow: covered by pretrain_sharded_sgd_test.py (sharded == one device)
# and the micro-batch equality tests (micro == whole batch).
@pytest.mark.slow
def test_sharded_micro_batched_step_equals_single_device_whole_batch():
  batch = fst.random_batch(batch=16)
  cfg = fst.no_dropout_config()
  # Plain SGD: AdamW would turn summation-order noise in near-zero gradients
  # into weight moves of order lr.
  tx = optax.sgd(0.5)
  l1, p1, _ = fst.run_steps(fst.MESH_ONE, batch, cfg=cfg, tx=tx)
  l8, p8, _ = fst.run_steps(fst.MESH_EIGHT_MIXED, batch, cfg=cfg,
                            micro_batches=2, tx=tx)
  np.testing.assert_allclose(l1, l8, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-6), p1, p8)
