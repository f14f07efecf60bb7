"""A SIGTERM between two evaluations keeps the early-stopping record and
the pending steps' metrics: the resumed run picks the same best step and
logs the same rows as an uninterrupted one."""
import json
import os
import signal
import unittest.mock

import pytest

from flip_jax import methods
from flip_jax.train import loop
from flip_jax.train import run_files
from flip_jax.train import steps as steps_lib
from tests.train import workdir_test as wtest  # pylint: disable=g-bad-import-order


def _config(tmp_path):
  """workdir_test's tiny ctr run, longer, with a moving AUC."""
  cfg = wtest._config(tmp_path, max_steps=12, patience=10)
  cfg.optim.lr = 0.05
  return cfg


def _run(cfg, workdir):
  return loop.train_and_evaluate(cfg, str(workdir), methods.make_task(cfg))


def _tracker(workdir):
  with open(os.path.join(workdir, run_files.TRACKER)) as f:
    return json.load(f)


_TIMING = ("examples_per_sec", "compile_sec")


def _rows(workdir):
  """metrics.jsonl without the wall-clock fields."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if k not in _TIMING}
            for line in f]


def test_sigterm_between_evaluations_keeps_the_record(tmp_path):
  cfg = _config(tmp_path)
  whole = _run(cfg, tmp_path / "whole")
  real = steps_lib.drain_metrics

  def drain(history, step):  # SIGTERM right after the step-3 evaluation
    if step == 3:
      os.kill(os.getpid(), signal.SIGTERM)
    return real(history, step)
  with unittest.mock.patch.object(steps_lib, "drain_metrics", drain):
    with pytest.raises(SystemExit):
      _run(cfg, tmp_path / "cut")
  # Saved at step 4, with the record of the evaluation at step 3.
  cut = _tracker(tmp_path / "cut")
  assert cut["4"] == cut["3"] and cut["3"]["best_step"] == 3
  res = _run(cfg, tmp_path / "cut")
  assert res["best_step"] == whole["best_step"]
  assert res["valid/auc"] == whole["valid/auc"]
  assert res["test/auc"] == whole["test/auc"]
  ref = _tracker(tmp_path / "whole")
  assert {k: v for k, v in _tracker(tmp_path / "cut").items() if k != "4"} == ref
  # The row at step 6 averages steps 4-6 (step 4 ran before the SIGTERM),
  # as in the uninterrupted run: every row equal, bit for bit.
  assert _rows(tmp_path / "cut") == _rows(tmp_path / "whole")


def test_patience_in_epochs_follows_the_cadence(tmp_path):
  cfg = _config(tmp_path)
  cfg.train.patience, cfg.train.patience_unit = 3, "epochs"
  cfg.train.eval_every_steps = -2   # two evaluations per epoch
  sched = run_files.schedule(cfg, num_rows=64 * 10)
  assert sched["steps_per_epoch"] == 10 and sched["eval_every"] == 5
  assert sched["patience_evals"] == 6
  cfg.train.patience_unit = "evals"
  assert run_files.schedule(cfg, num_rows=640)["patience_evals"] == 3


def test_run_ahead_is_bounded_so_sigterm_is_seen_within_steps(
    tmp_path, monkeypatch):
  """Python sees a SIGTERM only between device waits: the loop waits on the
  step `loop._IN_FLIGHT` steps back at every step, not only at a log row
  (which left every dispatched step to run first: seconds on a GPU)."""
  cfg = _config(tmp_path)
  cfg.log_every_steps = 100   # no row, no evaluation before the last step
  cfg.train.eval_every_steps = 12
  waited = []
  real = loop.jax.block_until_ready

  def block(x):
    waited.append(x)
    return real(x)
  monkeypatch.setattr(loop.jax, "block_until_ready", block)
  _run(cfg, tmp_path / "run")
  per_step = [x for x in waited if isinstance(x, dict)
              and "train/loss" in x]
  assert len(per_step) >= 12 - loop._IN_FLIGHT - 1, len(per_step)  # pylint: disable=protected-access
