"""The ICL probe quoted by RESULTS.md runs and prints what it promises."""
import os
import re
import subprocess
import sys

import pytest
from tests.helpers import env as env_lib  # pylint: disable=g-bad-import-order

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


@pytest.mark.slow  # ~40 s: a research sweep, not library behaviour
def test_icl_probe_prints_the_spread_and_the_steps(tmp_path):
  env = env_lib.child_env(devices=1)
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.sweeps.icl_probe",
       "--dataset=synthetic", "--preset=tiny", "--batch=8", "--steps=10",
       "--normalize", "--temperature=0.1", "--num_layers=1",
       f"--workdir={tmp_path}/w"],
      cwd=REPO, env=env, capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  spread = re.search(r"at init \(ID tower, z_r, z_t\): (\S+) (\S+) (\S+)", out)
  assert spread and all(float(x) >= 0 for x in spread.groups())
  steps = re.findall(r"step (\d+): ICL loss (\S+) accuracy (\S+) \(chance "
                     r"0\.125", out)
  assert [int(s) for s, _, _ in steps] == [1, 10]
  assert all(0.0 <= float(a) <= 1.0 for _, _, a in steps)
  held = re.findall(r"held-out, eval mode: loss (\S+) accuracy (\S+)", out)
  assert len(held) == 2 and all(0.0 <= float(a) <= 1.0 for _, a in held)
  assert "spread after" in out
