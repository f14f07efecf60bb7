"""config.prng_impl: the run's keys under threefry (default) or rbg."""
import functools

import jax
import numpy as np
import optax
import pytest

from flip_jax.models import flip as flip_lib
from flip_jax.train import state as state_lib
from flip_jax.train import steps

from tests.train import flip_step_test as fst  # pylint: disable=g-bad-import-order


def test_typed_threefry_keys_draw_the_legacy_bits():
  """The default keeps the bits the raw-key step drew (resumes stay exact)."""
  raw = jax.random.PRNGKey(5)
  legacy = jax.random.split(jax.random.fold_in(raw, 3))
  rngs = steps.step_rngs(raw, 3)
  for old, new in zip(legacy, (rngs["dropout"], rngs["noise"])):
    np.testing.assert_array_equal(
        jax.random.bernoulli(old, 0.9, (64,)),
        jax.random.bernoulli(new, 0.9, (64,)))


def test_unknown_impl_is_refused():
  with pytest.raises(ValueError, match="prng_impl 'philox'"):
    state_lib.new_key(0, "philox")


def test_pretrain_step_under_rbg_keys():
  model = flip_lib.FlipPretrainModel(fst.tiny_config())
  batch = fst.random_batch()
  params = fst.init(model, batch)
  tx = optax.adamw(1e-2)
  losses = {}
  for impl in ("threefry2x32", "rbg"):
    state = state_lib.create_train_state(params, tx,
                                         state_lib.new_key(0, impl))
    assert state.rng.shape == ((2,) if impl == "threefry2x32" else (4,))
    step = jax.jit(functools.partial(steps.pretrain_step, model=model, tx=tx,
                                     rng_impl=impl))
    state, m = step(state, batch, fst.consts())
    state, m2 = step(state, batch, fst.consts())
    assert int(state.step) == 2
    losses[impl] = float(m2["train/loss"])
    assert np.isfinite(losses[impl])
  # Other dropout and noise bits: other losses.
  assert losses["rbg"] != losses["threefry2x32"]
