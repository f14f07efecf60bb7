"""Micro-batched FLIP pretraining with the default NCE loss == whole batch.

How the noise is drawn: ``steps.train_step`` splits the step key into
``dropout`` and ``noise`` keys. The whole-batch step draws all S x K MTM
negatives from ``noise``; the micro-batched step (``cached_icl_grads``)
runs micro-batch i with ``fold_in(noise, i)`` and draws only its S/M slots'
negatives. Micro-batches therefore see other negatives than the same rows
see in the whole batch, and the NCE loss and gradient differ by more than
rounding (both are unbiased estimates; no key arrangement makes them
equal). Two tests pin this down:

* with real noise and one micro-batch, the micro-batched gradient equals the
  whole batch's under ``fold_in(key, 0)`` keys (the folding is the only
  difference): microbatch_nce_fold_test.py;
* here, with the noise made identical by a test-only model whose MTM negatives
  come from the batch (drawn on the host from the same q; ``microbatch.split``
  hands each micro-batch its own rows' negatives), the micro-batched step's
  loss, metrics and gradient equal the whole-batch step's, for 2 and 4
  micro-batches, with a padding slot and a row without MLM labels.

Dropout is off (every rate 0) where micro- and whole-batch are compared.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flip_jax import noise as noise_lib
from flip_jax.methods.flip import pretrain_model as flip_lib
from flip_jax.train import state as state_lib
from flip_jax.train import steps
from tests.methods.flip import flip_testlib as fst  # pylint: disable=g-bad-import-order


class BatchNoiseModel(flip_lib.FlipPretrainModel):
  """FlipPretrainModel whose MTM negatives are ``batch['mtm_noise']``.

  ``mtm_noise`` int32 [B, M, K]: K negatives for each of a row's M slots,
  so that a micro-batch (rows i::num) carries exactly its rows' negatives.
  """

  def _noise(self, num_slots, batch, consts):
    del consts
    return batch["mtm_noise"].reshape(num_slots,
                                      self.config.mtm_num_negatives)


def keep_grads() -> optax.GradientTransformation:
  """An 'optimizer' that keeps the step's gradient as its state.

  ``steps.train_step`` returns no gradient; with this ``tx`` the new
  ``opt_state['grads']`` is exactly the gradient the step computed (and the
  params stay put).
  """
  def init(params):
    return {"grads": jax.tree.map(jnp.zeros_like, params)}

  def update(grads, state, params=None):
    del state, params
    return jax.tree.map(jnp.zeros_like, grads), {"grads": grads}
  return optax.GradientTransformation(init, update)


def _noise_batch():
  """``padded_batch()`` + host-drawn NCE negatives from the global q."""
  batch = fst.padded_batch()
  c = fst.consts()
  k = fst.tiny_config().mtm_num_negatives
  slots = batch["mtm_labels"].shape
  batch["mtm_noise"] = np.asarray(noise_lib.sample_noise(
      jax.random.PRNGKey(5), c["log_q"], slots + (k,)), np.int32)
  return batch


_TX = keep_grads()


@functools.lru_cache(maxsize=None)
def _step(num):
  """(metrics, grads) of one ``steps.train_step`` with ``num`` micro-batches."""
  model = BatchNoiseModel(fst.no_dropout_config(mtm_loss="nce"))
  task = fst.task_for(model)
  state = state_lib.create_train_state(fst.tiny_params(), _TX,
                                       jax.random.PRNGKey(0))
  step = jax.jit(functools.partial(steps.train_step, task=task,
                                   micro_batches=num))
  new, metrics = step(state, _noise_batch(), fst.consts())
  assert int(new.step) == 1
  return jax.device_get(metrics), jax.device_get(new.opt_state["grads"])


@pytest.mark.parametrize("num", [2, 4])
def test_micro_batched_nce_step_equals_whole_batch_with_equal_noise(num):
  m1, g1 = _step(1)
  mm, gm = _step(num)
  assert set(m1) == set(mm) == fst.STEP_KEYS | {"train/mlm_dropped"}
  for k in sorted(m1):
    np.testing.assert_allclose(mm[k], m1[k], rtol=2e-5, atol=1e-6, err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      b, a, rtol=1e-4, atol=1e-6), g1, gm)
  # (Were the negatives not the batch's, micro-batches would draw their
  # own and the MTM terms above would differ.) NCE acts on the gradient.
  assert m1["train/mtm_loss"] > 0
  assert np.abs(g1["nce"]["embedding"]).max() > 0
