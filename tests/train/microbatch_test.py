"""Micro-batched steps: same loss and gradient as the whole batch."""
import functools

import jax
import numpy as np
import optax
import pytest

from flip_jax.models import flip as flip_lib
from flip_jax.models import plm as plm_lib
from flip_jax.train import microbatch
from flip_jax.train import state as state_lib
from flip_jax.train import steps
from tests.train import flip_step_test as fst


def test_split_is_strided_and_merge_inverts_it():
  x = np.arange(12 * 3).reshape(12, 3)
  m = microbatch.split({"x": x}, 4)["x"]
  assert m.shape == (4, 3, 3)
  np.testing.assert_array_equal(m[1], x[1::4])
  np.testing.assert_array_equal(microbatch.merge(m), x)
  with pytest.raises(ValueError, match="micro_batches=5"):
    microbatch.split({"x": x}, 5)


def _no_dropout_config(**kw):
  cfg = fst.tiny_config(proj_dropout=0.0, mlm_head_dropout=0.0,
                        mtm_loss="full", **kw)
  plm = cfg.plm
  return flip_lib.FlipConfig(**{
      **cfg.__dict__,
      "plm": plm_lib.PLMConfig(**{**plm.__dict__, "hidden_dropout": 0.0,
                                  "attention_dropout": 0.0})})


def _whole_batch(model, params, batch, c, rngs):
  def loss_fn(p):
    out = model.apply({"params": p}, batch, c, deterministic=False, rngs=rngs)
    return out["loss"], out
  (_, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  return out, grads


def _assert_close(out_a, g_a, out_b, g_b, keys, rtol=2e-5, atol=1e-6):
  for k in keys:
    np.testing.assert_allclose(out_a[k], out_b[k], rtol=rtol, atol=atol,
                               err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=1e-4, atol=1e-6), g_a, g_b)


@pytest.mark.parametrize("num", [2, 4])
@pytest.mark.parametrize("form", ["fast", "official"])
def test_micro_batched_equals_whole_batch_without_dropout(num, form):
  kw = {} if form == "fast" else dict(share_unmasked_pass=False,
                                      mlm_masked_only=False)
  batch = fst.random_batch(batch=8)
  batch["mtm_weight"][3] = 0.0        # a padding slot: weighted means
  batch["mlm_labels"][5] = -100       # a row with nothing masked
  model = flip_lib.FlipPretrainModel(_no_dropout_config(**kw))
  params = fst.init(model, batch)
  c = fst.consts()
  rngs = {"dropout": jax.random.PRNGKey(1), "noise": jax.random.PRNGKey(2)}
  out1, g1 = _whole_batch(model, params, batch, c, rngs)
  outm, gm, _ = jax.jit(functools.partial(
      steps.micro_batched_grads, model=model, num=num))(params, batch, c, rngs)
  _assert_close(out1, g1, outm, gm, ("loss", "icl_loss", "icl_acc", "mtm_loss",
                                     "mtm_acc", "mlm_loss", "mlm_masked_tokens"))


def test_cached_views_draw_the_same_dropout_as_the_rerun():
  # With dropout on and one micro-batch, the cached-gradient path must give
  # the whole-batch gradient under the same keys: any mismatch between the
  # dropout of the cached views and of the rerun would show in the ICL grads.
  batch = fst.random_batch(batch=8)
  model = flip_lib.FlipPretrainModel(fst.tiny_config(mtm_loss="full"))
  params = fst.init(model, batch)
  c = fst.consts()
  rngs = {"dropout": jax.random.PRNGKey(1), "noise": jax.random.PRNGKey(2)}
  folded = {k: jax.random.fold_in(v, 0) for k, v in rngs.items()}
  out1, g1 = _whole_batch(model, params, batch, c, folded)
  outm, gm, _ = steps.micro_batched_grads(params, batch, c, rngs,
                                          model=model, num=1)
  _assert_close(out1, g1, outm, gm, ("loss", "icl_loss", "mtm_loss",
                                     "mlm_loss"))


def test_micro_batched_step_trains():
  batch = fst.random_batch(batch=8)
  model = flip_lib.FlipPretrainModel(fst.tiny_config())
  params = fst.init(model, batch)
  tx = optax.adamw(1e-2)
  state = state_lib.create_train_state(params, tx, jax.random.PRNGKey(0))
  step = jax.jit(functools.partial(steps.pretrain_step, model=model, tx=tx,
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
  import ml_collections as mlc  # pylint: disable=g-import-not-at-top
  from flax import linen as nn  # pylint: disable=g-import-not-at-top
  from flip_jax.models import finetune as ft_lib  # pylint: disable=g-import-not-at-top
  from flip_jax.train import finetune  # pylint: disable=g-import-not-at-top
  cfg = _no_dropout_config()
  model = ft_lib.FlipCtrModel(ft_lib.FinetuneConfig(
      mode="joint", ctr=cfg.ctr, plm=cfg.plm, alpha_init=0.3))
  batch = fst.random_batch(batch=8)
  rs = np.random.RandomState(0)
  batch = {"ids": batch["ids"], "input_ids": batch["input_ids"],
           "attention_mask": batch["attention_mask"],
           "label": rs.randint(0, 2, 8).astype(np.float32),
           "weight": np.array([1, 1, 0, 1, 1, 1, 1, 0], np.float32)}
  params = nn.meta.unbox(model.init({"params": jax.random.PRNGKey(0)},
                                    batch)["params"])
  fcfg = mlc.ConfigDict({"mode": "joint", "loss_reduction": reduction,
                         "aux_weight": 1.0, "l2": l2,
                         "l2_regex": [r"^ctr/embedding/"]})
  rngs = {"dropout": jax.random.PRNGKey(3)}
  (_, (m1, _)), g1 = jax.value_and_grad(functools.partial(
      finetune.loss_fn, model=model, cfg=fcfg), has_aux=True)(
          params, {}, batch, rngs)
  m4, g4, _ = finetune.micro_batched_grads(params, batch, rngs, model=model,
                                           cfg=fcfg, num=4)
  assert set(m1) == set(m4)
  _assert_close(m1, g1, m4, g4, sorted(m1))


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
def test_sharded_micro_batched_step_equals_single_device_whole_batch():
  batch = fst.random_batch(batch=16)
  cfg = _no_dropout_config()
  # Plain SGD: AdamW would turn summation-order noise in near-zero gradients
  # into weight moves of order lr.
  tx = optax.sgd(0.5)
  l1, p1, _ = fst._run_steps([("data", 1), ("fsdp", 1), ("tensor", 1)], batch,
                             cfg=cfg, tx=tx)
  l8, p8, _ = fst._run_steps([("data", 2), ("fsdp", 2), ("tensor", 2)], batch,
                             cfg=cfg, micro_batches=2, tx=tx)
  np.testing.assert_allclose(l1, l8, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-6), p1, p8)
