"""Chaos: a tiny FLIP pretraining, and an evaluated CTR finetuning, killed
by SIGKILL and SIGTERM at random moments, rerun after each kill, end as
the uninterrupted run does: the final parameters bit for bit, every
metrics row (wall-clock fields apart), and for the evaluated run its best
step and results.json.

Slow (~2-3 min: one launch per kill). Its fast twins in the default run:
tests/train/preemption_tracker_test.py (a SIGTERM between evaluations
keeps the early-stopping record and the pending rows) and
tests/methods/flip/pretrain_loop_test.py (resume from a checkpoint is
bitwise).
"""
import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests.methods import ctr_test
from tests.methods.flip import pretrain_loop_test as plt
from tests.helpers import env as env_lib  # pylint: disable=g-bad-import-order

STEPS = 24
_TIMING = ("examples_per_sec", "compile_sec")


def _flags(plm_dir, cache_dir, workdir):
  flags = plt._flags(plm_dir, cache_dir, workdir)  # pylint: disable=protected-access
  flags = [f for f in flags if not f.startswith(
      ("--config.train.max_steps", "--config.ckpt.every_steps",
       "--config.train.micro_batch_size", "--config.log_every_steps",
       "--config.ckpt.async_save"))]
  return flags + [f"--config.train.max_steps={STEPS}",
                  "--config.ckpt.every_steps=4", "--config.log_every_steps=2",
                  "--config.ckpt.async_save=True"]


def _rows(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [{k: v for k, v in json.loads(line).items() if k not in _TIMING}
            for line in f if line.strip()]


def _until_done(proc):
  out = proc.communicate(timeout=600)[0]
  assert proc.returncode == 0, out[-3000:]


def _chaos(launch, run, seed):
  """Launches `launch()` until it finishes, killing it four times (SIGKILL,
  SIGTERM, ...) a random moment after each launch logged a new row."""
  rng = random.Random(seed)
  kills = []
  for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGKILL, signal.SIGTERM):
    rows_before = len(_rows(run))
    proc = launch()
    while proc.poll() is None and len(_rows(run)) <= rows_before:
      time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 0.6))
    if proc.poll() is not None:
      break  # finished before the kill: nothing left to interrupt
    proc.send_signal(sig)
    out = proc.communicate(timeout=600)[0]
    kills.append((sig.name, len(_rows(run)), proc.returncode))
    if sig == signal.SIGTERM and proc.returncode != 0:
      assert proc.returncode == 143, out[-3000:]
  assert len(kills) >= 2, kills
  _until_done(launch())
  return kills


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_pretraining_killed_at_random_moments_changes_nothing(tiny_bert_dir,
                                                              tmp_path):
  cache = tmp_path / "cache"
  ref, run = tmp_path / "ref", tmp_path / "chaos"
  _until_done(plt._launch(_flags(tiny_bert_dir, cache, ref), 1))  # pylint: disable=protected-access
  kills = _chaos(lambda: plt._launch(_flags(tiny_bert_dir, cache, run), 1),  # pylint: disable=protected-access
                 run, seed=7)
  s1, p1 = plt.final_params(ref)
  s2, p2 = plt.final_params(run)
  assert s1 == s2 == STEPS, kills
  jax.tree.map(np.testing.assert_array_equal, p1, p2)
  assert _rows(run) == _rows(ref), kills


def _train_ctr(workdir, cache):
  env = env_lib.child_env(devices=1)
  args = [f"--config={ctr_test.CONFIG}:dataset=synthetic,model=dcnv2",
          f"--workdir={workdir}", f"--config.data.cache_dir={cache}",
          *[a for a in ctr_test.SMALL if "max_steps" not in a
            and "eval_every" not in a],
          "--config.train.max_steps=60", "--config.train.eval_every_steps=6",
          "--config.log_every_steps=3", "--config.train.patience=100",
          "--config.optim.lr=0.01"]
  return subprocess.Popen([sys.executable, "-m", "experiments.train_ctr",
                           *args], cwd=plt.REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    res = json.load(f)
  res.pop("init_rule")  # "resume from step N" after a kill
  return {k: v for k, v in res.items() if k not in _TIMING}


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_evaluated_run_killed_at_random_moments_picks_the_same_best(
    tmp_path):
  cache = tmp_path / "cache"
  ref, run = tmp_path / "ref", tmp_path / "chaos"
  _until_done(_train_ctr(ref, cache))
  kills = _chaos(lambda: _train_ctr(run, cache), run, seed=11)
  assert _results(run) == _results(ref), kills
  assert _rows(run) == _rows(ref), kills
