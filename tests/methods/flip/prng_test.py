"""config.prng_impl: the run's keys under threefry (default) or rbg."""
import functools

import jax
import numpy as np
import optax
import pytest

from flip_jax.methods.flip import pretrain_model as flip_lib
from flip_jax.train import state as state_lib
from flip_jax.train import steps
from tests.methods.flip import flip_testlib as fst  # pylint: disable=g-bad-import-order


def test_typed_threefry_keys_draw_the_legacy_bits():
  """The default keeps the bits the raw-key step drew (resumes stay exact)."""
  raw = jax.random.PRNGKey(5)
  legacy = jax.random.split(jax.random.fold_in(raw, 3))
  rngs = steps.step_rngs(raw, 3)
  for old, new in zip(legacy, (rngs["dropout"], rngs["noise"])):
    np.testing.assert_array_equal(
        jax.random.bernoulli(old, 0.9, (64,)),
        jax.random.bernoulli(new, 0.9, (64,)))


def test_pretrain_task_splits_the_step_key_into_dropout_and_noise():
  """The FLIP task's streams are the (dropout, noise) split above."""
  raw = jax.random.PRNGKey(5)
  assert fst.task_for(None).rng_streams == ("dropout", "noise")
  default = steps.step_rngs(raw, 3)
  task = steps.step_rngs(raw, 3, fst.task_for(None).rng_streams)
  for k in ("dropout", "noise"):
    np.testing.assert_array_equal(jax.random.key_data(default[k]),
                                  jax.random.key_data(task[k]))


def test_unknown_impl_is_refused():
  with pytest.raises(ValueError, match="prng_impl 'philox'"):
    state_lib.new_key(0, "philox")


def test_pretrain_step_under_rbg_keys():
  model = flip_lib.FlipPretrainModel(fst.tiny_config())
  task = fst.task_for(model)
  batch = fst.random_batch()
  params = fst.tiny_params()
  c = fst.consts()
  tx = optax.adamw(1e-2)
  losses = {}
  for impl in ("threefry2x32", "rbg"):
    state = state_lib.create_train_state(params, tx,
                                         state_lib.new_key(0, impl))
    assert state.rng.shape == ((2,) if impl == "threefry2x32" else (4,))
    step = jax.jit(functools.partial(steps.train_step, task=task,
                                     rng_impl=impl))
    state, m = step(state, batch, c)
    state, m2 = step(state, batch, c)
    assert int(state.step) == 2
    losses[impl] = float(m2["train/loss"])
    assert np.isfinite(losses[impl])
  # Other dropout and noise bits: other losses.
  assert losses["rbg"] != losses["threefry2x32"]
