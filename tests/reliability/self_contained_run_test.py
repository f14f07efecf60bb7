"""A finished finetuning run is rebuilt from itself, never from init_from.

Defect class: `predict` / `export_torch` rebuilt the model from the
*pretraining* run's current config.json (`ckpt.init_from`): a replaced
pretraining run (other sizes) gave another model with rc 0, a moved one a
failure. Now the run stores the architecture it trained (`model.json`,
written when it starts, checked on resume) and every reload reads it; data
whose vocabulary is not the run's is refused naming the field.
"""
import contextlib
import copy
import json
import os
import shutil

import jax
import numpy as np
import pytest
from absl import logging

from experiments import scoring
from flip_jax.train import model_record
from flip_jax.train import reload
from flip_jax.train import run_files
from tests.methods.flip import finetune_loop_test as ftest  # pylint: disable=g-bad-import-order
from tests.methods.flip import pretrain_loop_test as ptest


@pytest.fixture(scope="module")
def runs(tiny_bert_dir, tmp_path_factory):
  """(pretraining run, ID finetuning run initialised from it)."""
  root = tmp_path_factory.mktemp("self_contained")
  cache = root / "cache"
  pre = root / "pre"
  ptest.train(ptest.make_config(tiny_bert_dir, cache, **{
      "train.max_steps": 2, "ckpt.every_steps": 2}), pre)
  ft = root / "ft"
  cfg = ftest.ft_config(tiny_bert_dir, cache, "id", str(pre), **{
      "train.max_steps": 4, "train.eval_every_steps": 2})
  ptest.train(cfg, ft)
  return pre, ft, cfg


def _scores(workdir):
  run = reload.load_run(str(workdir))
  model = run.task.model
  ids = np.asarray(run.data.eval_splits["test"]["ids"][:64])
  logit = model.apply(run.variables, {"ids": ids}, deterministic=True)["logit"]
  return model.config, np.asarray(jax.device_get(logit))


@contextlib.contextmanager
def _replaced_model(pre, **ctr):
  """The pretraining run's config.json with other ``model.ctr`` sizes."""
  path = pre / "config.json"
  saved = path.read_text()
  config = json.loads(saved)
  config["model"]["ctr"].update(ctr)
  path.write_text(json.dumps(config))
  try:
    yield
  finally:
    path.write_text(saved)


@pytest.mark.long
def test_model_json_holds_the_architecture_trained(runs):
  pre, ft, _ = runs
  stored = model_record.load(str(ft))
  trained = json.loads((pre / "config.json").read_text())["model"]
  assert stored["model"]["ctr"] == trained["ctr"]
  assert stored["model"]["ctr"]["dnn_hidden"] == [32, 16]


def test_replaced_pretraining_run_does_not_change_the_model(runs):
  pre, ft, _ = runs
  want_cfg, want = _scores(ft)
  with _replaced_model(pre, dnn_hidden=[8], embed_dim=4):
    got_cfg, got = _scores(ft)
  assert got_cfg == want_cfg
  np.testing.assert_array_equal(got, want)


def test_moved_pretraining_run_still_predicts(runs):
  pre, ft, _ = runs
  _, want = _scores(ft)
  moved = pre.parent / "pre_moved"
  os.rename(pre, moved)
  try:
    _, got = _scores(ft)
    preds, metrics = scoring.score_splits(str(ft), ["test"], batch_size=64)
  finally:
    os.rename(moved, pre)
  np.testing.assert_array_equal(got, want)
  assert len(preds["test"]["prob"]) > 0
  assert 0 < metrics["test"]["test/auc"] < 1


def test_saved_valid_predictions_are_the_best_params_own(runs):
  """The loop keeps the valid predictions of the best evaluation instead of
  predicting again once the best params are restored: the same numbers as
  scoring the finished run."""
  _, ft, cfg = runs
  saved = np.load(ft / run_files.PREDICTIONS)
  preds, metrics = scoring.score_splits(
      str(ft), ["valid"], batch_size=cfg.train.eval_batch_size)
  assert preds["valid"]
  for name, value in preds["valid"].items():
    np.testing.assert_array_equal(saved[f"valid/{name}"], value)
  results = json.loads((ft / run_files.RESULTS).read_text())
  assert results["valid/auc"] == metrics["valid"]["valid/auc"]


def test_relative_workdir_predicts(runs, monkeypatch):
  """`predict --workdir=runs/x` from the checkout: a relative path."""
  _, ft, _ = runs
  want = scoring.score_splits(str(ft), ["test"], batch_size=64)[0]
  monkeypatch.chdir(ft.parent)
  got = scoring.score_splits(ft.name, ["test"], batch_size=64)[0]
  np.testing.assert_array_equal(got["test"]["prob"], want["test"]["prob"])


def test_resume_refuses_another_architecture(runs, tmp_path):
  pre, ft, cfg = runs
  again = tmp_path / "ft"
  shutil.copytree(ft, again)
  before = sorted(os.listdir(again))
  cfg = copy.deepcopy(cfg)
  cfg.train.max_steps = 6  # a longer run resumes from step 4
  with _replaced_model(pre, dnn_hidden=[8]):
    with pytest.raises(model_record.ArchitectureChangedError,
                       match=r"model\.ctr\.dnn_hidden: \[32, 16\] -> \[8\]"):
      ptest.train(cfg, again)
  assert sorted(os.listdir(again)) == before


def test_run_without_model_json_falls_back_with_a_warning(runs, tmp_path,
                                                          monkeypatch):
  _, ft, _ = runs
  old = tmp_path / "old"
  shutil.copytree(ft, old)
  os.remove(old / model_record.MODEL_FILE)
  warnings = []
  monkeypatch.setattr(logging, "warning",
                      lambda msg, *a: warnings.append(msg % a))
  _, want = _scores(ft)
  _, got = _scores(old)
  np.testing.assert_array_equal(got, want)
  assert any("has no model.json" in w for w in warnings), warnings


def test_other_data_is_refused_naming_the_field(runs):
  _, ft, cfg = runs
  other = cfg.data.synthetic.to_dict()
  other["num_ratings"] += 40  # the same users and movies, other rows
  with pytest.raises(ValueError, match=r"does not match .*feature_map.json "
                     r"\(field '[a-z_]+': "):
    reload.load_run(str(ft), data_overrides={"synthetic": other})
