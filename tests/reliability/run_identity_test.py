"""A run_all rerun with other settings is refused before anything is written.

Defect class: a rerun of `run_all` on a finished workdir with another
`--dataset`, `--preset`, `--plm`, `--ctr`, `--data_dir` or `--set` skipped
every stage as done and wrote a report labelled with the new settings over
the old results (rc 0). Now every method's run_all records `run.json` and a
rerun that differs from it is refused in one line naming the difference.
"""
import json
import os
import subprocess
import sys

import pytest

from experiments import clickprompt_workflow
from experiments import flip_workflow
from experiments import run_identity
from experiments import srp4ctr_workflow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
BASE = dict(dataset="synthetic", data_dir="", preset="tiny",
            plm="minilm-l6", ctr="dcnv2", overrides={}, seeds=[2012])
RUN_ALLS = {"flip": flip_workflow.run_all,
            "clickprompt": clickprompt_workflow.run_all,
            "srp4ctr": srp4ctr_workflow.run_all}


def _tree(folder):
  """Every file under ``folder`` with its bytes."""
  out = {}
  for parent, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(parent, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, folder)] = f.read()
  return out


def _finished(workdir, method="flip", **args):
  """A workdir as a finished run of ``method`` with ``args`` leaves it."""
  args = {**BASE, **args}
  run_identity.claim(str(workdir), method, args)
  (workdir / "data").mkdir()
  (workdir / "data" / "stats.json").write_text("{}")
  (workdir / "data" / "sequences.json").write_text("{}")
  (workdir / "stages.json").write_text('{"prepare": {}}')
  return workdir


def test_a_new_workdir_is_recorded(tmp_path):
  run_identity.claim(str(tmp_path), "flip", BASE)
  rec = json.loads((tmp_path / run_identity.RUN_FILE).read_text())
  assert rec["method"] == "flip" and rec["dataset"] == "synthetic"
  assert rec["preset"] == "tiny" and rec["seed"] == 2012
  run_identity.claim(str(tmp_path), "flip", BASE)  # the same rerun


@pytest.mark.parametrize("change,named", [
    ({"dataset": "ml-100k"}, "--dataset=synthetic, not ml-100k"),
    ({"preset": "cpu-small"}, "--preset=tiny, not cpu-small"),
    ({"plm": "bert-base"}, "--plm=minilm-l6, not bert-base"),
    ({"ctr": "deepfm"}, "--ctr=dcnv2, not deepfm"),
    ({"overrides": {"train.max_steps": "20"}},
     "--set=[], not [train.max_steps=20]"),
    ({"seeds": [7]},
     "--seed=2012 (its stages are in the workdir itself), not 7"),
])
def test_a_rerun_with_other_settings_is_refused(tmp_path, change, named):
  workdir = _finished(tmp_path / "run")
  before = _tree(workdir)
  with pytest.raises(run_identity.RunIdentityError) as e:
    run_identity.claim(str(workdir), "flip", {**BASE, **change})
  assert str(e.value) == (f"{workdir} was run with {named}; use a new "
                          "--workdir")
  assert _tree(workdir) == before


def test_data_dir_is_compared_resolved(tmp_path, monkeypatch):
  raw = tmp_path / "raw"
  raw.mkdir()
  monkeypatch.chdir(tmp_path)
  workdir = _finished(tmp_path / "run", dataset="ml-100k", data_dir="raw")
  # The same folder named otherwise is the same run.
  run_identity.claim(str(workdir), "flip", {**BASE, "dataset": "ml-100k",
                                            "data_dir": str(raw)})
  (tmp_path / "other").mkdir()
  with pytest.raises(run_identity.RunIdentityError, match="--data_dir="):
    run_identity.claim(str(workdir), "flip", {**BASE, "dataset": "ml-100k",
                                              "data_dir": "other"})


def test_a_run_that_wrote_nothing_may_change(tmp_path):
  workdir = tmp_path / "run"
  run_identity.claim(str(workdir), "flip", {**BASE, "dataset": "ml-1m"})
  (workdir / "data").mkdir()  # a first stage that failed at once
  (workdir / "pretrain").mkdir()
  (workdir / "pretrain" / ".lock").write_text("")
  run_identity.claim(str(workdir), "flip", {**BASE, "dataset": "ml-100k"})
  rec = json.loads((workdir / run_identity.RUN_FILE).read_text())
  assert rec["dataset"] == "ml-100k"


def test_seeds_may_grow(tmp_path):
  workdir = _finished(tmp_path / "run")
  run_identity.claim(str(workdir), "flip", {**BASE, "seeds": [2012, 2013]})
  run_identity.claim(str(workdir), "flip", {**BASE, "seeds": [2014, 2015]})
  rec = json.loads((workdir / run_identity.RUN_FILE).read_text())
  assert rec["seeds"] == [2012, 2013, 2014, 2015] and rec["seed"] == 2012


def test_another_method_is_refused(tmp_path):
  workdir = _finished(tmp_path / "run", method="srp4ctr")
  with pytest.raises(run_identity.RunIdentityError,
                     match="--method=srp4ctr, not flip"):
    run_identity.claim(str(workdir), "flip", BASE)


def test_several_methods_layout_is_refused_as_one(tmp_path):
  root = tmp_path / "run"
  root.mkdir()
  _finished(root / "flip", method="flip")
  with pytest.raises(run_identity.RunIdentityError,
                     match=r"--method=flip in sub-folders"):
    run_identity.claim(str(root), "srp4ctr", BASE)


def test_older_workdir_is_checked_on_its_stage_configs(tmp_path):
  workdir = tmp_path / "run"
  (workdir / "pretrain").mkdir(parents=True)
  (workdir / "pretrain" / "config.json").write_text(json.dumps(
      {"data": {"dataset": "synthetic"}, "seed": 2012}))
  with pytest.raises(run_identity.RunIdentityError,
                     match="--dataset=synthetic, not ml-100k"):
    run_identity.claim(str(workdir), "flip", {**BASE, "dataset": "ml-100k"})
  assert not (workdir / run_identity.RUN_FILE).exists()
  run_identity.claim(str(workdir), "flip", BASE)  # accepted, then recorded
  assert (workdir / run_identity.RUN_FILE).exists()


@pytest.mark.parametrize("method", sorted(RUN_ALLS))
def test_every_method_run_all_refuses_before_writing(tmp_path, method):
  workdir = _finished(tmp_path / "run", method=method)
  before = _tree(workdir)
  args = {k: v for k, v in BASE.items() if k != "seeds"}
  with pytest.raises(run_identity.RunIdentityError,
                     match="was run with --dataset=synthetic, not ml-100k"):
    RUN_ALLS[method](**{**args, "dataset": "ml-100k",
                        "data_dir": str(tmp_path)},
                     workdir=str(workdir), seed=2012, stages=["prepare"])
  assert _tree(workdir) == before


def test_cli_refuses_in_one_line(tmp_path):
  workdir = _finished(tmp_path / "run", method="srp4ctr")
  before = _tree(workdir)
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.run_all", "--method=srp4ctr",
       "--dataset=ml-100k", f"--data_dir={tmp_path}", "--preset=tiny",
       f"--workdir={workdir}", "--stages=prepare"],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert errors == [f"error: {workdir} was run with --dataset=synthetic, "
                    "not ml-100k; use a new --workdir"], proc.stderr[-3000:]
  assert _tree(workdir) == before
