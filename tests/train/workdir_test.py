"""What protects a run: validation, the lock, rerun checks, damaged
checkpoints, failed saves and SIGTERM (the shared loop, on the ctr task)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from experiments.configs import ctr as ctr_configs
from flip_jax import checkpoint
from flip_jax import methods
from flip_jax.train import loop
from flip_jax.train import validate
from flip_jax.train import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _config(tmp_path, **train):
  cfg = ctr_configs.get_config("dataset=synthetic,model=dcnv2")
  cfg.data.synthetic.num_ratings = 1200
  cfg.data.cache_dir = str(tmp_path / "cache")
  cfg.train.batch_size = 64
  cfg.train.eval_every_steps = 3
  cfg.train.max_steps = 6
  cfg.log_every_steps = 3
  for k, v in train.items():
    cfg.train[k] = v
  return cfg


def _run(cfg, workdir):
  return loop.train_and_evaluate(cfg, str(workdir), methods.make_task(cfg))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("finished")
  cfg = _config(tmp)
  res = _run(cfg, tmp / "run")
  return cfg, tmp / "run", res


def test_invalid_config_is_refused_before_any_work(tmp_path):
  cfg = _config(tmp_path, micro_batch_size=-4)
  cfg.loss.reduction = "avg"
  cfg.prng_impl = "mt19937"
  with pytest.raises(validate.ConfigError) as e:
    _run(cfg, tmp_path / "run")
  msg = str(e.value)
  for field in ("train.micro_batch_size=-4", "loss.reduction='avg'",
                "prng_impl='mt19937'"):
    assert field in msg
  assert not (tmp_path / "run").exists()


@pytest.mark.multidevice
def test_batch_not_divisible_by_data_parallel_devices(tmp_path):
  cfg = _config(tmp_path, batch_size=60)  # 8 fake devices (conftest)
  with pytest.raises(validate.ConfigError, match="8 data-parallel devices"):
    _run(cfg, tmp_path / "run")


def test_rerun_with_another_config_writes_nothing(finished):
  cfg, workdir, _ = finished
  before = {n: (workdir / n).read_bytes()
            for n in ("config.json", "feature_map.json", "results.json")}
  other = _config(workdir.parent)
  other.model.ctr.name = "deepfm"
  with pytest.raises(workdir_lib.ConfigMismatchError,
                     match=r"model\.ctr\.name: 'dcnv2' -> 'deepfm'"):
    _run(other, workdir)
  for n, data in before.items():
    assert (workdir / n).read_bytes() == data, n


def test_rerun_may_change_its_length(finished):
  cfg, workdir, res = finished
  again = _config(workdir.parent, max_steps=6, patience=5)
  out = _run(again, workdir)  # finished: nothing more to train
  assert out["test/auc"] == res["test/auc"]


def test_second_run_on_a_locked_workdir_refuses(tmp_path):
  held = workdir_lib.WorkdirLock(str(tmp_path / "run")).acquire()
  try:
    with pytest.raises(workdir_lib.WorkdirBusyError, match=f"pid {os.getpid()}"):
      _run(_config(tmp_path), tmp_path / "run")
  finally:
    held.release()


def test_lock_of_a_dead_process_is_taken_over(tmp_path):
  workdir = tmp_path / "run"
  code = ("import sys, os; sys.path.insert(0, %r); "
          "from flip_jax.train import workdir as w; "
          "w.WorkdirLock(%r).acquire(); os._exit(0)") % (REPO, str(workdir))
  subprocess.run([sys.executable, "-c", code], check=True)
  assert json.loads((workdir / ".lock").read_text())["pid"] != os.getpid()
  with workdir_lib.WorkdirLock(str(workdir)):
    assert json.loads((workdir / ".lock").read_text())["pid"] == os.getpid()


def _corrupt(step_dir):
  """Overwrites every data file of a checkpoint step with garbage bytes."""
  for root, _, files in os.walk(step_dir):
    for name in files:
      path = os.path.join(root, name)
      size = os.path.getsize(path)
      with open(path, "r+b") as f:
        f.write(b"\xff" * max(size, 1))


def test_damaged_latest_checkpoint_is_set_aside(tmp_path):
  cfg = _config(tmp_path, max_steps=6, eval_every_steps=3)
  workdir = tmp_path / "run"
  _run(cfg, workdir)
  steps = sorted(int(n) for n in os.listdir(workdir / "checkpoints")
                 if n.isdigit())
  assert steps[-1] == 6 and 3 in steps
  _corrupt(workdir / "checkpoints" / "6")
  os.remove(workdir / "results.json")
  cfg.train.max_steps = 9
  res = _run(cfg, workdir)
  assert res["steps"] == 9
  assert os.path.isdir(workdir / checkpoint.DAMAGED_DIR / "6")
  assert res["init_rule"] == "resume from step 3"


def test_no_usable_checkpoint_names_them(tmp_path):
  cfg = _config(tmp_path)
  workdir = tmp_path / "run"
  _run(cfg, workdir)
  for n in os.listdir(workdir / "checkpoints"):
    if n.isdigit():
      _corrupt(workdir / "checkpoints" / n)
  os.remove(workdir / "results.json")
  with pytest.raises(checkpoint.CheckpointError, match="no usable checkpoint"):
    _run(cfg, workdir)


def test_failed_save_stops_with_the_path(tmp_path, monkeypatch):
  cfg = _config(tmp_path)
  workdir = tmp_path / "run"
  real_open = open

  def read_only(path, *args, **kwargs):
    if ".write_probe." in str(path):
      raise OSError(30, "Read-only file system", str(path))
    return real_open(path, *args, **kwargs)
  monkeypatch.setattr("builtins.open", read_only)
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"checkpoints is not writable \(Read-only"):
    _run(cfg, workdir)


def test_sigterm_saves_then_stops(tmp_path):
  cfg = _config(tmp_path, max_steps=40, eval_every_steps=40)
  workdir = tmp_path / "run"
  timer = threading.Timer(
      0.0, lambda: os.kill(os.getpid(), signal.SIGTERM))
  from flip_jax.train import steps as steps_lib  # pylint: disable=g-import-not-at-top
  real = steps_lib.drain_metrics
  calls = []

  def drain(history, step):
    calls.append(step)
    if len(calls) == 1:
      timer.start()
      timer.join()
    return real(history, step)
  import unittest.mock  # pylint: disable=g-import-not-at-top
  with unittest.mock.patch.object(steps_lib, "drain_metrics", drain):
    with pytest.raises(SystemExit) as e:
      _run(cfg, workdir)
  assert e.value.code == 143
  saved = [int(n) for n in os.listdir(workdir / "checkpoints") if n.isdigit()]
  assert saved and max(saved) < 40
  assert signal.getsignal(signal.SIGTERM) is not None
  res = _run(cfg, workdir)
  assert res["steps"] == 40
  assert np.isfinite(res["test/auc"])
