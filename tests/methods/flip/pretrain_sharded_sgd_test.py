"""The data-parallel FLIP pretraining step equals one device under SGD."""
import jax
import numpy as np
import optax
import pytest

from tests.methods.flip import flip_testlib as fst  # pylint: disable=g-bad-import-order

pytestmark = pytest.mark.multidevice  # 8 fake devices (conftest)


@fst.needs_8_devices
def test_data_parallel_sgd_step_equals_single_device():
  """One SGD update on 8 data-parallel devices == on one device.

  Adam (pretrain_sharded_test.py) divides the update by the gradient's own scale, so a
  constant factor on the sharded gradient (a mean over devices taken as a
  sum, a loss mean over the local instead of the global batch ...) would
  leave its params unchanged. Plain SGD moves the params by lr * grad:
  such an error shows in the params, in the update and in grad_norm.
  The default model (dropout on, NCE with global noise): threefry keys
  give the same bits however the arrays are sharded.
  """
  batch = fst.random_batch(batch=8)
  tx = optax.sgd(0.5)
  one = fst.run_steps(fst.MESH_ONE, batch, num_steps=1, tx=tx,
                      details=True)
  eight = fst.run_steps(fst.MESH_EIGHT_DATA, batch, num_steps=1, tx=tx,
                        details=True)
  # Same init on both meshes (the comparison starts from equal params).
  jax.tree.map(np.testing.assert_array_equal, one["init_params"],
               eight["init_params"])
  m1, m8 = one["metrics"][0], eight["metrics"][0]
  assert set(m1) == set(m8)
  for k in sorted(m1):
    np.testing.assert_allclose(m8[k], m1[k], rtol=1e-5, atol=1e-7, err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-6),
               one["params"], eight["params"])

  # The updates themselves (lr * grad), leaf by leaf, to 1e-4 of their norm.
  def update(res):
    return jax.tree.map(lambda a, b: np.asarray(a, np.float64) - b,
                        res["params"], res["init_params"])
  u1, u8 = update(one), update(eight)
  flat1 = jax.tree_util.tree_leaves_with_path(u1)
  flat8 = jax.tree.leaves(u8)
  moved = 0
  for (path, a), b in zip(flat1, flat8):
    norm = np.linalg.norm(a)
    if norm == 0:
      assert np.linalg.norm(b) == 0, jax.tree_util.keystr(path)
      continue
    moved += 1
    assert np.linalg.norm(b - a) <= 1e-4 * norm + 1e-6, (
        jax.tree_util.keystr(path), np.linalg.norm(b - a), norm)
  assert moved > 0.9 * len(flat1)
  # The check has teeth: the update is far above the params' tolerance,
  # so a gradient off by any constant factor != 1 (say 1/8 or 2) fails.
  total = np.sqrt(sum(np.sum(a ** 2) for a in jax.tree.leaves(u1)))
  assert total > 1e-2
  np.testing.assert_allclose(m8["train/grad_norm"], total / 0.5, rtol=1e-4)
