"""Micro-batched FLIP finetuning (``FlipFinetuneTask`` through the default
``LossTask.grads``): same metrics and gradient as the whole batch."""
import functools

import jax
import numpy as np
import pytest
from flax import linen as nn

from experiments.configs import flip_finetune as ft_config
from flip_jax.methods.flip import finetune
from flip_jax.methods.flip import finetune_model as ft_lib
from tests.methods.flip import flip_testlib as fst  # pylint: disable=g-bad-import-order


@pytest.mark.parametrize("reduction,l2", [("mean", 1e-3), ("sum", 0.0)])
def test_finetune_micro_batched_equals_whole_batch(reduction, l2):
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
  task = finetune.FlipFinetuneTask(config, model)
  rngs = {"dropout": jax.random.PRNGKey(3)}

  @functools.partial(jax.jit, static_argnums=0)
  def grads(num, p):
    return task.grads(p, {}, batch, {}, rngs, micro_batches=num)

  m1, g1, _ = grads(1, params)
  m4, g4, _ = grads(4, params)
  assert set(m1) == set(m4)
  fst.assert_close(m1, g1, m4, g4, sorted(m1))
