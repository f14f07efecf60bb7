"""ClickPrompt and SRP4CTR runs reload from themselves, not their pretraining.

The twin of `self_contained_run_test.py` (FLIP) for the two other loaders:
the one loader (`flip_jax.train.reload`) and the export through it
(`flip_jax.methods.run_export`) read the architecture the run recorded
(`model.json`); a pretraining run moved away or replaced by one of other
sizes changes nothing. `predict`'s scoring reproduces each run's test AUC
from the run alone, and the run exports to PyTorch with parity (ClickPrompt,
SRP4CTR, DIN, the ID model from scratch).
"""
import json
import os

import numpy as np
import pytest

from experiments import scoring
from experiments.configs import ctr as ctr_configs
from experiments.configs import srp4ctr_ctr
from experiments.configs import srp4ctr_pretrain
from flip_jax import methods
from flip_jax.methods import run_export
from flip_jax.methods.srp4ctr import export as srp_export
from flip_jax.train import loop
from flip_jax.train import model_record
from flip_jax.train import reload
from tests.methods.clickprompt import finetune_export_test as cp_test  # pylint: disable=g-bad-import-order
from tests.methods.clickprompt import pretrain_loop_test as cp_pre
from tests.methods.srp4ctr import srp_testlib as srp


def _replace(path, section, **values):
  """Rewrites ``section`` (dotted) of the config.json at ``path``."""
  config = json.loads(path.read_text())
  node = config
  for part in section.split("."):
    node = node[part]
  node.update(values)
  path.write_text(json.dumps(config))


@pytest.fixture(scope="module")
def srp_runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("srp")
  tiny = srp.tiny_overrides(root / "cache")
  srp.train(srp.set_fields(
      srp4ctr_pretrain.get_config("dataset=synthetic,preset=tiny"),
      {**tiny, "train.max_steps": 2, "train.batch_size": 8}), root / "pre")
  srp.train(srp.set_fields(
      srp4ctr_ctr.get_config("dataset=synthetic,preset=tiny"),
      {**tiny, "train.max_steps": 2, "train.eval_every_steps": 2,
       "train.batch_size": 16, "srp4ctr.num_queries": 2,
       "srp4ctr.pretrained": str(root / "pre")}), root / "ctr")
  return root


@pytest.mark.long
def test_srp4ctr_export_reads_the_run_not_its_pretraining(srp_runs):
  root = srp_runs
  stored = model_record.load(str(root / "ctr"))
  assert stored["model"]["seq"]["hidden"] == 8
  want = run_export.export_run(root / "ctr", root / "t1", check=True)
  os.rename(root / "pre", root / "pre_moved")
  _replace(root / "pre_moved" / "config.json", "model.seq", hidden=16)
  got = run_export.export_run(root / "ctr", root / "t2", check=True)
  assert got == want <= 1e-5
  assert (json.loads((root / "t2" / srp_export.CONFIG_FILE).read_text())
          == json.loads((root / "t1" / srp_export.CONFIG_FILE).read_text()))


@pytest.fixture(scope="module")
def cp_runs(tiny_bert_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp("cp")
  cp_pre.train(cp_pre.tiny_config(tiny_bert_dir, root / "cache", **{
      "train.max_steps": 2, "ckpt.every_steps": 2}), root / "pre")
  cfg = cp_test._finetune_config(tiny_bert_dir, root / "cache", "ctr_only",  # pylint: disable=protected-access
                                 root / "pre")
  cfg.train.update(max_steps=2, eval_every_steps=2)
  cp_pre.train(cfg, root / "ctr_only")
  return root


@pytest.mark.long
def test_clickprompt_reload_reads_the_run_not_its_pretraining(cp_runs):
  root = cp_runs
  run = str(root / "ctr_only")
  want = reload.load_run(run).task.model.config
  os.rename(root / "pre", root / "pre_moved")
  _replace(root / "pre_moved" / "config.json", "model.ctr",
           dnn_hidden=[8], embed_dim=4)
  assert reload.load_run(run).task.model.config == want
  diff = run_export.export_run(run, root / "torch", check=True, num_rows=32)
  assert diff <= 1e-5


def _scores_as_it_was_tested(run):
  """The generic reload scores test as the loop's final evaluation did."""
  with open(os.path.join(run, "results.json")) as f:
    want = json.load(f)["test/auc"]
  preds, metrics = scoring.score_splits(str(run), ["test"], batch_size=32)
  assert metrics["test"]["test/auc"] == pytest.approx(want, abs=1e-6)
  pred = preds["test"]
  assert len(pred["prob"]) == len(pred["label"]) == len(pred["row_id"]) > 0
  assert list(pred["row_id"]) == sorted(pred["row_id"])
  return pred


def test_srp4ctr_run_predicts_alone(srp_runs):
  assert not (srp_runs / "pre").exists()  # moved by the test above
  _scores_as_it_was_tested(srp_runs / "ctr")


def test_clickprompt_run_predicts_alone(cp_runs):
  assert not (cp_runs / "pre").exists()
  _scores_as_it_was_tested(cp_runs / "ctr_only")


def _exports_with_parity(run, out, kind):
  diff = run_export.export_run(run, out, check=True, num_rows=48)
  assert 0.0 <= diff <= run_export.CHECK_ATOL
  with open(os.path.join(out, "flip_jax_export.json")) as f:
    assert json.load(f)["kind"] == kind


def test_id_model_from_scratch_predicts_and_exports(tmp_path):
  cfg = ctr_configs.get_config("dataset=synthetic,model=dcnv2")
  cfg.data.synthetic.num_ratings = 1200
  cfg.data.cache_dir = str(tmp_path / "cache")
  cfg.train.update(batch_size=64, max_steps=4, eval_every_steps=2)
  loop.train_and_evaluate(cfg, str(tmp_path / "ctr"), methods.make_task(cfg))
  pred = _scores_as_it_was_tested(tmp_path / "ctr")
  # The ID model is written as FLIP's id-mode export (FlipCtrTorch), whose
  # probabilities are the run's own.
  _exports_with_parity(tmp_path / "ctr", tmp_path / "torch", "flip_ctr")
  from flip_jax.export import ctr_torch  # pylint: disable=g-import-not-at-top
  run = reload.load_run(str(tmp_path / "ctr"))
  ids = np.asarray(run.data.eval_splits["test"]["ids"][:16], np.int64)
  twin = ctr_torch.FlipCtrTorch.from_pretrained(tmp_path / "torch")
  np.testing.assert_allclose(twin.predict_proba({"ids": ids}).numpy(),
                             pred["prob"][:16], atol=1e-5)


def test_din_run_predicts_and_exports(tmp_path):
  tiny = srp.tiny_overrides(tmp_path / "cache")
  srp.train(srp.set_fields(
      srp4ctr_ctr.get_config("dataset=synthetic,preset=tiny,variant=din"),
      {**tiny, "train.max_steps": 2, "train.eval_every_steps": 2,
       "train.batch_size": 16}), tmp_path / "din")
  _scores_as_it_was_tested(tmp_path / "din")
  _exports_with_parity(tmp_path / "din", tmp_path / "torch", "srp4ctr")
  assert srp_export.load(str(tmp_path / "torch")).cfg.sequence == "din"
