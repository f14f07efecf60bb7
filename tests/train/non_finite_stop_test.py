"""A non-finite training metric stops the shared loop cleanly.

The check is the loop's (``flip_jax.train.loop``), the same for every task;
it runs here on the cheap ``ctr`` task (FLIP pretraining through the loop:
tests/methods/flip/pretrain_loop_test.py).
"""
import jax
import numpy as np
import pytest

from flip_jax import checkpoint
from flip_jax.train import steps
from tests.train import loop_test as lt  # pylint: disable=g-bad-import-order


def test_nan_stops_cleanly_and_keeps_last_good_checkpoint(tmp_path,
                                                          monkeypatch):
  real_step = steps.train_step

  def poisoned(state, batch, consts, **kw):
    new_state, metrics = real_step(state, batch, consts, **kw)
    bad = state.step >= 5  # the 6th step
    metrics["train/loss"] = jax.numpy.where(bad, jax.numpy.nan,
                                            metrics["train/loss"])
    return new_state, metrics

  monkeypatch.setattr(steps, "train_step", poisoned)
  cfg = lt.ctr_config(tmp_path / "cache",
                      **{"train.max_steps": 12, "ckpt.every_steps": 4,
                         "log_every_steps": 4, "train.eval_every_steps": 100})
  workdir = tmp_path / "run"
  with pytest.raises(FloatingPointError, match=r"step 6.*train/loss"):
    lt.train(cfg, workdir)
  assert lt.latest_step(workdir) == 4
  params = checkpoint.restore_params(str(workdir), step=4)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))
