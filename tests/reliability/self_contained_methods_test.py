"""ClickPrompt and SRP4CTR runs reload from themselves, not their pretraining.

The twin of `self_contained_run_test.py` (FLIP) for the two other loaders:
ClickPrompt's `load_finetuned` (its export) and SRP4CTR's export read the
architecture the run recorded (`model.json`); a pretraining run moved away
or replaced by one of other sizes changes nothing. `predict`'s scoring
(`flip_jax.train.reload`, one loader for every method) reproduces each
run's test AUC from the run alone.
"""
import json
import os

import pytest

from experiments import scoring
from experiments.configs import ctr as ctr_configs
from experiments.configs import srp4ctr_ctr
from experiments.configs import srp4ctr_pretrain
from flip_jax.methods.clickprompt import export as cp_export
from flip_jax.methods.clickprompt import finetune as cp_finetune
from flip_jax.methods.srp4ctr import export as srp_export
from flip_jax import methods
from flip_jax.train import loop
from flip_jax.train import model_record
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


def test_srp4ctr_export_reads_the_run_not_its_pretraining(srp_runs):
  root = srp_runs
  stored = model_record.load(str(root / "ctr"))
  assert stored["model"]["seq"]["hidden"] == 8
  want = srp_export.export_srp4ctr(str(root / "ctr"), str(root / "t1"))
  os.rename(root / "pre", root / "pre_moved")
  _replace(root / "pre_moved" / "config.json", "model.seq", hidden=16)
  got = srp_export.export_srp4ctr(str(root / "ctr"), str(root / "t2"))
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


def test_clickprompt_reload_reads_the_run_not_its_pretraining(cp_runs):
  root = cp_runs
  run = str(root / "ctr_only")
  want = cp_finetune.load_finetuned(run)[1].config
  os.rename(root / "pre", root / "pre_moved")
  _replace(root / "pre_moved" / "config.json", "model.ctr",
           dnn_hidden=[8], embed_dim=4)
  assert cp_finetune.load_finetuned(run)[1].config == want
  diff = cp_export.export_finetuned(run, root / "torch", check=True,
                                    num_rows=32)
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


def test_id_model_from_scratch_predicts(tmp_path):
  cfg = ctr_configs.get_config("dataset=synthetic,model=dcnv2")
  cfg.data.synthetic.num_ratings = 1200
  cfg.data.cache_dir = str(tmp_path / "cache")
  cfg.train.update(batch_size=64, max_steps=4, eval_every_steps=2)
  loop.train_and_evaluate(cfg, str(tmp_path / "ctr"), methods.make_task(cfg))
  _scores_as_it_was_tested(tmp_path / "ctr")
