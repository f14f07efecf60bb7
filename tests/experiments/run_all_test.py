"""Smoke test of the main job (experiments.run_all) on the tiny preset."""
import json
import os
import pathlib
import subprocess
import sys

import pytest
from tests.helpers import env as env_lib  # pylint: disable=g-bad-import-order

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.long
@pytest.mark.timeout(900)
def test_run_all_tiny_produces_every_output(tiny_bert_dir, tmp_path):
  workdir = tmp_path / "run"
  env = env_lib.child_env(devices=1)
  cmd = [sys.executable, "-m", "experiments.run_all", "--dataset=synthetic",
         f"--workdir={workdir}", "--preset=tiny", f"--plm={tiny_bert_dir}",
         # An override in the shared config names, scoped to finetuning
         # (evaluation batch only: the results do not depend on it).
         "--set=finetune:train.eval_batch_size=128"]
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True,
                        text=True, check=False)
  assert proc.returncode == 0, proc.stderr[-4000:]
  for stage in ("base_id", "base_plm", "flip_id", "flip_plm", "flip_joint"):
    with open(workdir / stage / "results.json") as f:
      res = json.load(f)
    assert 0.0 < res["test/auc"] < 1.0 and res["test/logloss"] > 0
  with open(workdir / "flip_joint" / "results.json") as f:
    joint = json.load(f)
  # The planted data carries signal in both views: clearly above chance.
  assert joint["test/auc"] > 0.6, joint
  assert (workdir / "pretrain" / "metrics.jsonl").exists()
  for stage, want in (("flip_joint", 128), ("base_id", 128),
                      ("pretrain", 512)):
    with open(workdir / stage / "config.json") as f:
      assert json.load(f)["train"]["eval_batch_size"] == want, stage
  with open(workdir / "export_joint" / "check.json") as f:
    assert json.load(f)["max_abs_diff"] < 1e-5
  report = (workdir / "report.md").read_text()
  assert "FLIP (joint)" in report and "pretrain_losses.png" in report
  for png in ("pretrain_losses.png", "valid_auc.png", "alpha.png"):
    assert (workdir / png).stat().st_size > 1000
  stages = json.loads((workdir / "stages.json").read_text())
  assert {"prepare", "pretrain", "flip_joint", "export"} <= set(stages)
  # Rerunning skips every finished stage.
  again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True,
                         text=True, check=False)
  assert again.returncode == 0, again.stderr[-4000:]
  assert again.stderr.count("already done, skipped") == len(stages)
