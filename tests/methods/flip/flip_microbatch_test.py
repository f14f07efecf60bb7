"""Micro-batched FLIP pretraining: same loss and gradient as the whole batch.

``pretrain.cached_icl_grads`` (MTM and MLM split exactly, ICL by cached
gradients) without dropout, full-softmax MTM, in the fast and the official
form. The generic split / merge of ``flip_jax.train.microbatch`` is tested in
tests/train/microbatch_test.py (this file's name differs: pytest imports test
files by basename). Also: flip_microbatch_step_test.py (dropout, training),
microbatch_nce_test.py (the NCE loss), microbatch_sharded_test.py (8 devices),
finetune_microbatch_test.py (finetuning).
"""
import functools

import jax
import numpy as np
import pytest

from flip_jax.methods.flip import pretrain
from flip_jax.methods.flip import pretrain_model as flip_lib
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


FORMS = {"fast": {},
         "official": dict(share_unmasked_pass=False, mlm_masked_only=False)}


def _batch():
  batch = fst.random_batch(batch=8)
  batch["mtm_weight"][3] = 0.0        # a padding slot: weighted means
  batch["mlm_labels"][5] = -100       # a row with nothing masked
  return batch


@functools.lru_cache(maxsize=None)
def _whole_batch_of_form(form):
  """The whole batch's terms and grads, once per form (num 2 and 4 share)."""
  model = flip_lib.FlipPretrainModel(fst.no_dropout_config(**FORMS[form]))
  rngs = {"dropout": jax.random.PRNGKey(1), "noise": jax.random.PRNGKey(2)}
  return _whole_batch(model, _params(), _batch(), fst.consts(), rngs)


@pytest.mark.parametrize("num", [2, 4])
@pytest.mark.parametrize("form", ["fast", "official"])
def test_micro_batched_equals_whole_batch_without_dropout(num, form):
  kw = FORMS[form]
  batch = _batch()
  model = flip_lib.FlipPretrainModel(fst.no_dropout_config(**kw))
  params = _params()
  c = fst.consts()
  rngs = {"dropout": jax.random.PRNGKey(1), "noise": jax.random.PRNGKey(2)}
  out1, g1 = _whole_batch_of_form(form)
  outm, gm, _ = jax.jit(functools.partial(
      pretrain.cached_icl_grads, model, num=num))(params, batch, c, rngs)
  _assert_close(out1, g1, outm, gm, ("loss", "icl_loss", "icl_acc", "mtm_loss",
                                     "mtm_acc", "mlm_loss", "mlm_masked_tokens"))
