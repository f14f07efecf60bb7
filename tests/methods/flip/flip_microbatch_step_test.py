"""Micro-batched FLIP pretraining steps with dropout on: the cached ICL views
draw the rerun's dropout; a micro-batched ``steps.train_step`` trains."""
import functools

import jax
import numpy as np
import optax

from flip_jax.methods.flip import pretrain
from flip_jax.methods.flip import pretrain_model as flip_lib
from flip_jax.train import state as state_lib
from flip_jax.train import steps
from tests.methods.flip import flip_testlib as fst  # pylint: disable=g-bad-import-order


def test_cached_views_draw_the_same_dropout_as_the_rerun():
  # With dropout on and one micro-batch, the cached-gradient path must give
  # the whole-batch gradient under the same keys: any mismatch between the
  # dropout of the cached views and of the rerun would show in the ICL grads.
  batch = fst.random_batch(batch=8)
  model = flip_lib.FlipPretrainModel(fst.tiny_config(mtm_loss="full"))
  params = fst.tiny_params()
  c = fst.consts()
  rngs = {"dropout": jax.random.PRNGKey(1), "noise": jax.random.PRNGKey(2)}
  folded = {k: jax.random.fold_in(v, 0) for k, v in rngs.items()}
  out1, g1 = fst.whole_batch_grads(model, params, batch, c, folded)
  outm, gm, _ = jax.jit(functools.partial(
      pretrain.cached_icl_grads, model, num=1))(params, batch, c, rngs)
  fst.assert_close(out1, g1, outm, gm, ("loss", "icl_loss", "mtm_loss",
                                        "mlm_loss"))


def test_micro_batched_step_trains():
  batch = fst.random_batch(batch=8)
  model = flip_lib.FlipPretrainModel(fst.tiny_config())
  task = fst.task_for(model)
  params = fst.tiny_params()
  tx = optax.adamw(1e-2)
  state = state_lib.create_train_state(params, tx, jax.random.PRNGKey(0))
  step = jax.jit(functools.partial(steps.train_step, task=task,
                                   micro_batches=4))
  c = fst.consts()
  first = None
  for _ in range(15):
    state, m = step(state, batch, c)
    first = first if first is not None else float(m["train/loss"])
  assert float(m["train/loss"]) < first
  assert int(state.step) == 15
  assert np.isfinite(float(m["train/grad_norm"]))
