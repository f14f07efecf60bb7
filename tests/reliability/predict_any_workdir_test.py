"""`predict` / `export_torch` on any workdir: a finished run, or one line.

Defect classes: on a FLIP pretraining workdir, an unfinished run or a run
without `best/`, `predict` ended in `AttributeError` tracebacks; a workdir
whose `config.json` was missing let a mode-changing rerun write a new one
before failing; `--data_dir` was checked on the total feature count only
(a renamed user moved ids with the same count). Now every such folder gets
one line saying what it is and what to give instead, a rerun on checkpoints
without `config.json` is refused before anything is written, and the data's
vocabulary is compared with the run's field by field.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments.configs import ctr as ctr_configs
from flip_jax import methods
from flip_jax.data import features
from flip_jax.train import finished
from flip_jax.train import loop
from flip_jax.train import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _folder(path, config=None, steps=(), best=(), results=False):
  """A run folder: config.json, checkpoints/<step>, best/, results.json."""
  path.mkdir(parents=True)
  if config is not None:
    (path / "config.json").write_text(json.dumps(config))
  for s in steps:
    (path / "checkpoints" / str(s)).mkdir(parents=True)
  for s in best:
    (path / "best" / "checkpoints" / str(s)).mkdir(parents=True)
  if results:
    (path / "results.json").write_text("{}")
  return path


FINETUNE = {"task": "flip_finetune", "finetune": {"mode": "id"}}


@pytest.mark.parametrize("make,expect", [
    (lambda p: p, "does not exist"),
    (lambda p: (p.write_text("x"), p)[1],
     "is a file, not a finetuning run folder"),
    (lambda p: _folder(p), "is not a run folder (no config.json)"),
    (lambda p: _folder(p, steps=[4]),
     "holds checkpoints but no config.json (deleted?)"),
    (lambda p: _folder(p, results=True),
     "holds results but no model (no config.json, no checkpoints"),
    (lambda p: _folder(p, {"task": "flip_pretrain"}, steps=[4]),
     "is a pretraining run (task flip_pretrain)"),
    (lambda p: _folder(p, FINETUNE, steps=[30], best=[20]),
     "is an unfinished flip_finetune run (no results.json; checkpoints up "
     "to step 30)"),
    (lambda p: _folder(p, FINETUNE, steps=[30], results=True),
     "is a finished flip_finetune run without its best/ checkpoint"),
])
def test_each_kind_of_folder_is_named(tmp_path, make, expect):
  run = make(tmp_path / "w")
  with pytest.raises(finished.NotAFinishedRunError) as e:
    finished.require(str(run))
  assert str(e.value).startswith(f"--workdir {run} {expect}"), str(e.value)
  assert "\n" not in str(e.value)


def test_a_folder_of_runs_names_its_finished_runs(tmp_path):
  root = tmp_path / "runs"
  _folder(root / "flip_joint", FINETUNE, best=[5], results=True)
  _folder(root / "seed3" / "base_id", FINETUNE, best=[5], results=True)
  _folder(root / "pretrain", {"task": "flip_pretrain"}, steps=[4])
  why = finished.describe(str(root))
  assert why == (f"--workdir {root} is a folder of runs, not a run (no "
                 f"config.json); give one of its finished runs: "
                 f"{root / 'flip_joint'}, {root / 'seed3' / 'base_id'}")
  assert finished.describe(str(root / "flip_joint")) is None


def _one_error(proc) -> str:
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1, proc.stderr[-3000:]
  return errors[0]


def _cli(module, *args):
  return subprocess.run([sys.executable, "-m", f"experiments.{module}",
                         *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=300, check=False)


def test_predict_on_a_pretraining_run_is_one_line(tmp_path):
  pre = _folder(tmp_path / "pre", {
      "task": "flip_pretrain", "model": {"plm": {"name": "minilm-l6"}},
      "pretrain": {}}, steps=[4])
  line = _one_error(_cli("predict", f"--workdir={pre}",
                         f"--out={tmp_path / 'p.csv'}"))
  assert line.startswith(f"error: --workdir {pre} is a pretraining run "
                         "(task flip_pretrain)")
  assert f"ckpt.init_from={pre}" in line
  assert sorted(os.listdir(tmp_path)) == ["pre"]


def test_export_of_an_unfinished_run_is_one_line(tmp_path):
  run = _folder(tmp_path / "run", FINETUNE, steps=[2], best=[2])
  line = _one_error(_cli("export_torch", f"--workdir={run}",
                         f"--out={tmp_path / 'torch'}"))
  assert line.startswith(f"error: --workdir {run} is an unfinished "
                         "flip_finetune run")
  assert sorted(os.listdir(tmp_path)) == ["run"]


def test_rerun_on_checkpoints_without_config_json_writes_nothing(tmp_path):
  cfg = ctr_configs.get_config("dataset=synthetic,model=dcnv2")
  cfg.data.cache_dir = str(tmp_path / "cache")
  run = _folder(tmp_path / "run", steps=[6])
  with pytest.raises(workdir_lib.ConfigMismatchError,
                     match="holds checkpoints or results but no config.json"):
    loop.train_and_evaluate(cfg, str(run), methods.make_task(cfg))
  assert sorted(os.listdir(run)) == [".lock", "checkpoints"]


def _fm(values, counts=None):
  vocabs = [np.array(v, dtype=object) for v in values]
  sizes = [len(v) + features.NUM_RESERVED for v in values]
  if counts is None:
    counts = np.ones(sum(sizes), np.int64)
  return features.FeatureMap(("user_id", "item_id"), ("user", "item"),
                             vocabs, counts)


def test_feature_maps_are_compared_field_by_field():
  base = _fm([["u1", "u2", "u3"], ["i1", "i2"]])
  assert features.first_difference(base, base) is None
  renamed = _fm([["u1", "u2", "u9"], ["i1", "i2"]])  # same size and total
  assert features.first_difference(base, renamed) == (
      "field 'user_id': id 4 is 'u3' vs 'u9'")
  bigger = _fm([["u1", "u2", "u3"], ["i1", "i2", "i3"]])
  assert features.first_difference(base, bigger) == (
      "field 'item_id': vocabulary of 4 ids vs 5")
  counts = np.ones(9, np.int64)
  counts[7] = 2
  recounted = _fm([["u1", "u2", "u3"], ["i1", "i2"]], counts)
  assert features.first_difference(base, recounted) == (
      "field 'item_id': the feature counts differ (other rows counted)")


def test_run_feature_map_check_names_the_field(tmp_path):
  _fm([["u1", "u2", "u3"], ["i1", "i2"]]).save(str(tmp_path))
  finished.check_feature_map(str(tmp_path), _fm([["u1", "u2", "u3"],
                                                  ["i1", "i2"]]))
  with pytest.raises(ValueError, match=r"feature_map.json \(field 'user_id': "
                     r"id 4 is 'u3' vs 'u9'\).*--data_dir"):
    finished.check_feature_map(str(tmp_path), _fm([["u1", "u2", "u9"],
                                                   ["i1", "i2"]]))
