"""SRP4CTR's sharded steps: 8 devices == 1 device, micro-batches == whole."""
import functools

import jax
import numpy as np
import optax
import pytest
from flax import linen as nn

from experiments.configs import srp4ctr_ctr
from experiments.configs import srp4ctr_pretrain
from flip_jax import sharding
from flip_jax import sharding_rules
from flip_jax.methods.srp4ctr import data as data_lib
from flip_jax.methods.srp4ctr import fgbert
from flip_jax.methods.srp4ctr import finetune
from flip_jax.methods.srp4ctr import model as model_lib
from flip_jax.methods.srp4ctr import pretrain
from flip_jax.train import init as init_lib
from flip_jax.train import state as state_lib
from flip_jax.train import steps
from tests.methods.srp4ctr import srp_testlib as lib


def ctr_task(dropout=0.1):
  task = finetune.Srp4ctrTask(
      srp4ctr_ctr.get_config("dataset=synthetic,preset=tiny"),
      model_lib.Srp4ctrModel(lib.model_config(dropout=dropout, layers_=1)))
  batch = lib.random_batch(batch=8)
  return task, {k: batch[k] for k in finetune.model_keys(task.cfg)
                + ("label", "weight")}, {}


def pretrain_task(item_loss="sampled", dropout=0.1):
  cfg = srp4ctr_pretrain.get_config("dataset=synthetic,preset=tiny")
  task = pretrain.Srp4ctrPretrainTask(cfg, fgbert.FGBertPretrainModel(
      fgbert.PretrainConfig(seq=lib.seq_config(dropout, 1),
                            item_loss=item_loss, num_negatives=5)))
  b = lib.random_batch(seed=2, batch=8)
  m = data_lib.mask_windows(b["hist"], b["hist_mask"], mask_prob=0.2,
                            seed=0, epoch=0, index=np.arange(8))
  counts = np.arange(lib.VOCAB[0], dtype=np.float64)
  counts[:2] = 0
  log_q = np.log(np.maximum(counts, 1e-30) / counts.sum()).astype(np.float32)
  log_q[:2] = -np.inf
  return task, {"hist_mask": b["hist_mask"], **m}, {"item_log_q": log_q}


def run_steps(task, batch, consts, num_devices, micro_batches=1, num=2):
  """``num`` jitted, sharded train steps: (losses, host params)."""
  mesh = sharding.make_mesh([("data", num_devices), ("fsdp", 1),
                             ("tensor", 1)], jax.devices()[:num_devices])
  rules = sharding_rules.DEFAULT_RULES
  tx = optax.adam(1e-2)
  si = init_lib.sharded_state_init(
      lambda rng: task.init_variables(rng, batch, consts),
      lambda p, ms, r: state_lib.create_train_state(p, tx, r, ms), tx, mesh,
      rules)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state = si.init(jax.random.PRNGKey(0))
    batch_sh = {k: sharding.batch_sharding(mesh, rules, v.ndim)
                for k, v in batch.items()}
    const_sh = {k: sharding.replicated(mesh) for k in consts}
    step = jax.jit(functools.partial(steps.train_step, task=task,
                                     micro_batches=micro_batches),
                   in_shardings=(si.shardings, batch_sh, const_sh),
                   out_shardings=(si.shardings, sharding.replicated(mesh)),
                   donate_argnums=0)
    gb = sharding.global_batch(batch, mesh, rules)
    gc = {k: jax.device_put(v, sharding.replicated(mesh))
          for k, v in consts.items()}
    losses = []
    for _ in range(num):
      state, metrics = step(state, gb, gc)
      losses.append(float(metrics["train/loss"]))
  return losses, jax.device_get(state.params)


def _close(a, b, tol=2e-5):
  np.testing.assert_allclose(a[0], b[0], rtol=tol, atol=tol)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=tol,
                                                       atol=tol), a[1], b[1])


@pytest.mark.multidevice
def test_ctr_step_8_devices_equals_1():
  task, batch, consts = ctr_task()
  _close(run_steps(task, batch, consts, 1), run_steps(task, batch, consts, 8))


@pytest.mark.multidevice
def test_pretrain_step_8_devices_equals_1():
  task, batch, consts = pretrain_task()
  _close(run_steps(task, batch, consts, 1), run_steps(task, batch, consts, 8))


def test_pretrain_micro_batches_equal_the_whole_batch():
  """The masked-slot means split exactly (``loss_norms``)."""
  task, batch, consts = pretrain_task("full", dropout=0.0)
  _close(run_steps(task, batch, consts, 1, num=1),
         run_steps(task, batch, consts, 1, micro_batches=2, num=1))
