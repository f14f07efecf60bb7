"""Micro-batched FLIP steps: same loss and gradient as the whole batch.

Pretraining (cached-gradient ICL, ``pretrain.cached_icl_grads``) and
finetuning (``Task.grads`` accumulated over micro-batches). The generic
split / merge of ``flip_jax.train.microbatch`` is tested in
tests/train/microbatch_test.py (this file's name differs: pytest imports
test files by basename); the NCE loss in microbatch_nce_test.py; the
sharded micro-batched step in microbatch_sharded_test.py.
"""
import functools

import jax
import numpy as np
import optax
import pytest

from flip_jax.methods.flip import pretrain
from flip_jax.methods.flip import pretrain_model as flip_lib
from flip_jax.train import state as state_lib
from flip_jax.train import steps
from tests.methods.flip import flip_testlib as fst  # pylint: disable=g-bad-import-order


def _whole_batch(model, params, batch, c, rngs):
  """Loss terms and grads of the whole batch in one pass (jitted)."""
  def loss_fn(p):
    out = model.apply({"params": p}, batch, c, deterministic=False, rngs=rngs)
    return out["loss"], out
  (_, out), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
  return out, grads


def _assert_close(out_a, g_a, out_b, g_b, keys, rtol=2e-5, atol=1e-6):
  for k in keys:
    np.testing.assert_allclose(out_a[k], out_b[k], rtol=rtol, atol=atol,
                               err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=1e-4, atol=1e-6), g_a, g_b)


@functools.lru_cache(maxsize=None)
def _params():
  """One init for the file: the forms and dropout rates share the params."""
  return fst.init(flip_lib.FlipPretrainModel(fst.tiny_config()),
                  fst.random_batch(batch=8))


@pytest.mark.parametrize("num", [2, 4])
@pytest.mark.parametrize("form", ["fast", "official"])
def test_micro_batched_equals_whole_batch_without_dropout(num, form):
  kw = {} if form == "fast" else dict(share_unmasked_pass=False,
                                      mlm_masked_only=False)
  batch = fst.random_batch(batch=8)
  batch["mtm_weight"][3] = 0.0        # a padding slot: weighted means
  batch["mlm_labels"][5] = -100       # a row with nothing masked
  model = flip_lib.FlipPretrainModel(fst.no_dropout_config(**kw))
  params = _params()
  c = fst.consts()
  rngs = {"dropout": jax.random.PRNGKey(1), "noise": jax.random.PRNGKey(2)}
  out1, g1 = _whole_batch(model, params, batch, c, rngs)
  outm, gm, _ = jax.jit(functools.partial(
      pretrain.cached_icl_grads, model, num=num))(params, batch, c, rngs)
  _assert_close(out1, g1, outm, gm, ("loss", "icl_loss", "icl_acc", "mtm_loss",
                                     "mtm_acc", "mlm_loss", "mlm_masked_tokens"))


def test_cached_views_draw_the_same_dropout_as_the_rerun():
  # With dropout on and one micro-batch, the cached-gradient path must give
  # the whole-batch gradient under the same keys: any mismatch between the
  # dropout of the cached views and of the rerun would show in the ICL grads.
  batch = fst.random_batch(batch=8)
  model = flip_lib.FlipPretrainModel(fst.tiny_config(mtm_loss="full"))
  params = _params()
  c = fst.consts()
  rngs = {"dropout": jax.random.PRNGKey(1), "noise": jax.random.PRNGKey(2)}
  folded = {k: jax.random.fold_in(v, 0) for k, v in rngs.items()}
  out1, g1 = _whole_batch(model, params, batch, c, folded)
  outm, gm, _ = jax.jit(functools.partial(
      pretrain.cached_icl_grads, model, num=1))(params, batch, c, rngs)
  _assert_close(out1, g1, outm, gm, ("loss", "icl_loss", "mtm_loss",
                                     "mlm_loss"))


def test_micro_batched_step_trains():
  batch = fst.random_batch(batch=8)
  model = flip_lib.FlipPretrainModel(fst.tiny_config())
  task = fst.task_for(model)
  params = _params()
  tx = optax.adamw(1e-2)
  state = state_lib.create_train_state(params, tx, jax.random.PRNGKey(0))
  step = jax.jit(functools.partial(steps.train_step, task=task, tx=tx,
                                   micro_batches=4))
  c = fst.consts()
  first = None
  for _ in range(15):
    state, m = step(state, batch, c)
    first = first if first is not None else float(m["train/loss"])
  assert float(m["train/loss"]) < first
  assert int(state.step) == 15
  assert np.isfinite(float(m["train/grad_norm"]))


@pytest.mark.parametrize("reduction,l2", [("mean", 1e-3), ("sum", 0.0)])
def test_finetune_micro_batched_equals_whole_batch(reduction, l2):
  # pylint: disable=g-import-not-at-top
  from flax import linen as nn
  from experiments.configs import flip_finetune as ft_config
  from flip_jax.methods.flip import finetune
  from flip_jax.methods.flip import finetune_model as ft_lib
  # pylint: enable=g-import-not-at-top
  cfg = fst.no_dropout_config()
  model = ft_lib.FlipCtrModel(ft_lib.FinetuneConfig(
      mode="joint", ctr=cfg.ctr, plm=cfg.plm, alpha_init=0.3))
  batch = fst.random_batch(batch=8)
  rs = np.random.RandomState(0)
  batch = {"ids": batch["ids"], "input_ids": batch["input_ids"],
           "attention_mask": batch["attention_mask"],
           "label": rs.randint(0, 2, 8).astype(np.float32),
           "weight": np.array([1, 1, 0, 1, 1, 1, 1, 0], np.float32)}
  params = nn.meta.unbox(jax.jit(lambda r: model.init(
      {"params": r}, batch)["params"])(jax.random.PRNGKey(0)))
  config = ft_config.get_config("dataset=synthetic,mode=joint")
  config.loss.reduction = reduction
  config.loss.aux_weight = 1.0
  config.loss.l2 = l2
  config.loss.l2_regex = [r"^ctr/embedding/"]
  task = finetune.FlipFinetuneTask(config)
  task.model = model
  rngs = {"dropout": jax.random.PRNGKey(3)}

  @functools.partial(jax.jit, static_argnums=0)
  def grads(num, p):
    return task.grads(p, {}, batch, {}, rngs, micro_batches=num)

  m1, g1, _ = grads(1, params)
  m4, g4, _ = grads(4, params)
  assert set(m1) == set(m4)
  _assert_close(m1, g1, m4, g4, sorted(m1))
