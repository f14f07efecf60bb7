"""flip_jax.train.microbatch: strided split / merge of a global batch.

The micro-batched FLIP steps (same loss and gradient as the whole batch)
are tested in tests/methods/flip/flip_microbatch_test.py,
microbatch_nce_test.py and microbatch_sharded_test.py.
"""
import numpy as np
import pytest

from flip_jax.train import microbatch


def test_split_is_strided_and_merge_inverts_it():
  x = np.arange(12 * 3).reshape(12, 3)
  m = microbatch.split({"x": x}, 4)["x"]
  assert m.shape == (4, 3, 3)
  np.testing.assert_array_equal(m[1], x[1::4])
  np.testing.assert_array_equal(microbatch.merge(m), x)
  with pytest.raises(ValueError, match="micro_batches=5"):
    microbatch.split({"x": x}, 5)
