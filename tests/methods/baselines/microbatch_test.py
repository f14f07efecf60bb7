"""Micro-batched steps of both baselines (``train.micro_batch_size``): the
same loss, metrics and gradient as the whole batch (no dropout), through
the default ``LossTask.grads`` with each task's ``loss_norms``. (CTR-BERT's
case is marked slow: run it with ``-m slow``.)"""
import functools

import jax
import numpy as np
import pytest
from flax import linen as nn

from experiments.configs import ctr_bert as ctr_bert_config
from experiments.configs import p_tab_pretrain
from flip_jax.methods.baselines import ctr_bert
from flip_jax.methods.baselines import p_tab
from flip_jax.models import plm as plm_lib


@pytest.fixture(scope="module")
def plm_config(tiny_bert_dir):
  """The tiny BERT's architecture, a small vocabulary, no dropout."""
  module, _, _ = plm_lib.load_pretrained(str(tiny_bert_dir), num_layers=1)
  return module.config.replace(vocab_size=128, hidden_dropout=0.0,
                               attention_dropout=0.0)


def _tokens(rs, b, length, vocab):
  ids = rs.randint(5, vocab, (b, length)).astype(np.int32)
  mask = np.ones((b, length), np.int32)
  for r in range(b):
    mask[r, rs.randint(3, length + 1):] = 0
  return ids, mask


def _grads(task, params, batch):
  rngs = {"dropout": jax.random.PRNGKey(3)}

  @functools.partial(jax.jit, static_argnums=0)
  def grads(num, p):
    return task.grads(p, {}, batch, {}, rngs, micro_batches=num)
  return grads(1, params), grads(4, params)


def _assert_close(whole, micro):
  (m1, g1, _), (m4, g4, _) = whole, micro
  assert set(m1) == set(m4)
  for k in m1:
    np.testing.assert_allclose(m4[k], m1[k], rtol=2e-5, atol=1e-6,
                               err_msg=k)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=2e-4,
                                 atol=1e-6), g4, g1)


def _init(model, batch):
  return nn.meta.unbox(jax.jit(lambda r: model.init(
      {"params": r}, batch)["params"])(jax.random.PRNGKey(0)))


@pytest.mark.slow  # ~7 s; the default run keeps the P-Tab case below
def test_ctr_bert_micro_batched_equals_whole_batch(plm_config):
  rs = np.random.RandomState(0)
  batch = {}
  for side, length in (("user", 6), ("item", 8)):
    batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"] = _tokens(
        rs, 8, length, plm_config.vocab_size)
  batch["label"] = rs.randint(0, 2, 8).astype(np.float32)
  batch["weight"] = np.array([1, 1, 0, 1, 1, 1, 1, 0], np.float32)
  task = ctr_bert.CtrBertTask(
      ctr_bert_config.get_config("preset=tiny"),
      ctr_bert.CtrBertModel(ctr_bert.CtrBertConfig(
          plm=plm_config, mlp_hidden=8, mlp_dropout=0.0)))
  params = _init(task.model, batch)
  whole, micro = _grads(task, params, batch)
  assert set(whole[0]) == {"bce", "loss"}
  _assert_close(whole, micro)


def test_p_tab_micro_batched_equals_whole_batch(plm_config):
  rs = np.random.RandomState(1)
  ids, mask = _tokens(rs, 8, 12, plm_config.vocab_size)
  batch = p_tab.mask_batch(
      {"input_ids": ids, "attention_mask": mask}, seed=0, epoch=0,
      index=np.arange(8), prob=0.3, mask_token_id=4,
      vocab_size=plm_config.vocab_size, special_token_ids=None)
  batch = {k: batch[k] for k in p_tab.MODEL_KEYS}
  # K = 3 < the most masked tokens of a row: the drops count the same way.
  task = p_tab.PTabPretrainTask(
      p_tab_pretrain.get_config("preset=tiny"),
      p_tab.PTabPretrainModel(p_tab.PTabConfig(plm=plm_config,
                                               max_masked=3)))
  params = _init(task.model, batch)
  whole, micro = _grads(task, params, batch)
  assert set(whole[0]) >= {"loss", "mlm_loss", "mlm_acc", "mlm_dropped",
                           "mlm_masked_tokens"}
  assert whole[0]["mlm_dropped"] > 0
  _assert_close(whole, micro)
