"""Chaos for the main job: `run_all --seeds=1,2` killed by SIGKILL and
SIGTERM at random moments between and inside its stages, rerun after each
kill, ends with the uninterrupted run's results: every stage's
results.json and the report's summary.json (wall-clock fields apart), and
every stage recorded once in each seed's stages.json.

Slow (a reference run plus one launch per kill). Fast twins in the default
run: tests/experiments/run_all_test.py (a rerun skips every finished
stage), tests/reliability/chaos_test.py's inner loops are covered by
tests/train/preemption_tracker_test.py.
"""
import glob
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.methods.flip import pretrain_loop_test as plt
from tests.helpers import env as env_lib  # pylint: disable=g-bad-import-order

SEEDS = (1, 2)
STAGES = "prepare,base_id,base_plm"
# Fields that differ between two runs of the same work.
_TIMING = ("examples_per_sec", "compile_sec", "wall_sec", "train_sec",
           "init_rule", "finished", "device")


def _launch(plm_dir, workdir):
  """The run in the background, this launch's output in a file beside the
  workdir (a pipe nobody reads while waiting for the kill moment would fill
  and stall the run)."""
  env = env_lib.child_env(devices=1)
  cmd = [sys.executable, "-m", "experiments.run_all", "--dataset=synthetic",
         f"--workdir={workdir}", "--preset=tiny", f"--plm={plm_dir}",
         f"--seeds={','.join(map(str, SEEDS))}", f"--stages={STAGES}"]
  log = open(f"{workdir}.log", "w")  # pylint: disable=consider-using-with
  proc = subprocess.Popen(cmd, cwd=plt.REPO, env=env, stdout=log,
                          stderr=subprocess.STDOUT, text=True)
  proc.log_path = log.name
  log.close()  # the child holds its own copy
  return proc


def _wait(proc) -> str:
  """The exit of a launch and its output."""
  proc.wait(timeout=900)
  with open(proc.log_path) as f:
    return f.read()


def _strip(value):
  if isinstance(value, dict):
    return {k: _strip(v) for k, v in value.items() if k not in _TIMING}
  if isinstance(value, list):
    return [_strip(v) for v in value]
  return value


def _progress(workdir) -> int:
  """Finished stages plus metrics rows written so far (a moment marker)."""
  n = 0
  for path in glob.glob(os.path.join(workdir, "**", "*.jsonl"),
                        recursive=True) + glob.glob(
                            os.path.join(workdir, "**", "results.json"),
                            recursive=True):
    try:
      with open(path) as f:
        n += sum(1 for line in f if line.strip())
    except OSError:
      pass
  return n


def _outputs(workdir):
  out = {}
  for path in sorted(glob.glob(os.path.join(workdir, "**", "results.json"),
                               recursive=True)):
    with open(path) as f:
      out[os.path.relpath(path, workdir)] = _strip(json.load(f))
  with open(os.path.join(workdir, "summary.json")) as f:
    out["summary.json"] = _strip(json.load(f))
  return out


def _stage_logs(workdir):
  logs = {}
  for path in glob.glob(os.path.join(workdir, "**", "stages.json"),
                        recursive=True):
    with open(path) as f:
      logs[os.path.relpath(path, workdir)] = sorted(json.load(f))
  return logs


def _finish(proc):
  out = _wait(proc)
  assert proc.returncode == 0, out[-3000:]
  return out


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_run_all_seeds_killed_at_random_moments_reports_the_same(
    tiny_bert_dir, tmp_path):
  ref, run = tmp_path / "ref", tmp_path / "chaos"
  _finish(_launch(tiny_bert_dir, ref))
  rng = random.Random(5)
  kills = []
  for sig in (signal.SIGKILL, signal.SIGTERM) * 3:
    before = _progress(run)
    proc = _launch(tiny_bert_dir, run)
    while proc.poll() is None and _progress(run) <= before:
      time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 1.5))
    if proc.poll() is not None:
      break  # finished before the kill
    proc.send_signal(sig)
    out = _wait(proc)
    kills.append((sig.name, _progress(run), proc.returncode))
    if sig == signal.SIGTERM:
      assert proc.returncode in (0, 143), out[-3000:]
  assert len(kills) >= 3, kills
  last = _finish(_launch(tiny_bert_dir, run))
  assert "Traceback" not in last, last[-3000:]
  assert _outputs(run) == _outputs(ref), kills
  assert _stage_logs(run) == _stage_logs(ref), kills
