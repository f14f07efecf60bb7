"""Chaos: a tiny FLIP pretraining killed by SIGKILL and SIGTERM at random
moments, rerun after each kill, ends as the uninterrupted run does: the
final parameters bit for bit and every metrics row (wall-clock fields
apart).

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
import time

import jax
import numpy as np
import pytest

from tests.methods.flip import pretrain_loop_test as plt

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


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_kills_at_random_moments_change_nothing(tiny_bert_dir, tmp_path):
  cache = tmp_path / "cache"
  ref = tmp_path / "ref"
  _until_done(plt._launch(_flags(tiny_bert_dir, cache, ref), 1))  # pylint: disable=protected-access

  rng = random.Random(7)
  run = tmp_path / "chaos"
  kills = []
  for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGKILL, signal.SIGTERM):
    rows_before = len(_rows(run))
    proc = plt._launch(_flags(tiny_bert_dir, cache, run), 1)  # pylint: disable=protected-access
    # Kill once this launch has logged a new row, a random moment later.
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
  _until_done(plt._launch(_flags(tiny_bert_dir, cache, run), 1))  # pylint: disable=protected-access

  s1, p1 = plt.final_params(ref)
  s2, p2 = plt.final_params(run)
  assert s1 == s2 == STEPS, kills
  jax.tree.map(np.testing.assert_array_equal, p1, p2)
  assert _rows(run) == _rows(ref), kills
