"""Smoke tests of the experiments.train_ctr entry point on synthetic data."""
import json
import os

from absl import flags
import numpy as np
import pytest

from experiments import train_ctr
from experiments.configs import ctr as ctr_configs

CONFIG = os.path.join(os.path.dirname(ctr_configs.__file__), "ctr.py")
SMALL = ["--config.data.synthetic.num_users=60",
         "--config.data.synthetic.num_movies=50",
         "--config.data.synthetic.num_ratings=1500",
         "--config.train.batch_size=32", "--config.train.eval_batch_size=64",
         "--config.train.max_steps=5", "--config.train.eval_every_steps=2",
         "--config.model.ctr.dnn_hidden=(16,8)",
         "--config.model.ctr.embed_dim=8",
         "--config.model.ctr.low_rank=4",
         "--config.model.ctr.att_layers=1"]


@pytest.fixture
def run_main(tmp_path, monkeypatch):
  def run(variant, *extra):
    workdir = str(tmp_path / "run")
    argv = ["train_ctr", f"--config={CONFIG}:{variant}",
            f"--workdir={workdir}",
            f"--config.data.cache_dir={tmp_path / 'cache'}", *SMALL, *extra]
    # config_flags finds the --config.* overrides in sys.argv.
    monkeypatch.setattr("sys.argv", argv)
    flags.FLAGS.unparse_flags()
    flags.FLAGS(argv)
    try:
      train_ctr.main(["train_ctr"])
    finally:
      flags.FLAGS.unparse_flags()
      # Override flags are defined per parse; drop them for the next one.
      for name in [n for n in flags.FLAGS if n.startswith("config.")]:
        delattr(flags.FLAGS, name)
    return workdir
  return run


def test_main_trains_evaluates_and_reports(run_main):
  workdir = run_main("dataset=synthetic,model=dcnv2,recipe=flip_id")
  res = json.load(open(os.path.join(workdir, "results.json")))
  for key in ("valid/auc", "valid/logloss", "test/auc", "test/logloss"):
    assert np.isfinite(res[key]), key
  assert 0.0 <= res["test/auc"] <= 1.0
  assert res["best_step"] in (2, 4, 5) and res["steps"] == 5
  assert res["seed"] == 2012 and res["model"] == "dcnv2"
  assert res["examples_per_sec"] > 0 and "cpu" in res["device"]
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [l["step"] for l in lines] == [2, 4, 5]
  cfg = json.load(open(os.path.join(workdir, "config.json")))
  assert cfg["model"]["ctr"]["name"] == "dcnv2"
  fmap = json.load(open(os.path.join(workdir, "feature_map.json")))
  assert fmap
  # A rerun on the finished workdir reports the stored results unchanged.
  again = train_ctr.train_and_evaluate(
      ctr_configs.get_config("dataset=synthetic"), workdir)
  assert again == res


def test_main_other_backbone_and_recipe(run_main):
  workdir = run_main("dataset=synthetic,model=afn,recipe=ctr_base",
                     "--config.model.ctr.afn_ltl_hidden=4")
  res = json.load(open(os.path.join(workdir, "results.json")))
  assert res["recipe"] == "ctr_base" and np.isfinite(res["test/logloss"])


def test_bad_split_is_reported():
  cols = {"ids": np.array([[0, 5]], np.int32), "label": np.array([1.0])}
  with pytest.raises(ValueError, match="row 0 field 1 has id 5"):
    train_ctr.check_split("valid", cols, num_features=5, num_fields=2)
  with pytest.raises(ValueError, match="0/1"):
    train_ctr.check_split("valid", {"ids": cols["ids"] % 5,
                                    "label": np.array([0.5])}, 5, 2)


def test_unknown_recipe():
  with pytest.raises(ValueError, match="recipe"):
    ctr_configs.get_config("recipe=nope")
