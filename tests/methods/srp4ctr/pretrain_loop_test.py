"""FG-BERT pretraining on the shared loop, and a CTR run started from it."""
import jax
import numpy as np
import pytest

from experiments.configs import srp4ctr_ctr
from experiments.configs import srp4ctr_pretrain
from tests.methods.srp4ctr import srp_testlib as lib


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  """A 16-step pretraining run on tiny synthetic data."""
  root = tmp_path_factory.mktemp("srp_pre")
  cfg = lib.set_fields(
      srp4ctr_pretrain.get_config("dataset=synthetic,preset=tiny"),
      {**lib.tiny_overrides(root / "cache"), "train.max_steps": 16,
       "train.num_epochs": 10, "train.batch_size": 8, "log_every_steps": 4, "ckpt.every_steps": 8,
       "optim.lr": 3e-3})
  lib.train(cfg, root / "pre")
  return root


def test_short_pretraining_lowers_the_loss(root):
  recs = lib.read_metrics(root / "pre")
  assert [r["step"] for r in recs] == [4, 8, 12, 16]
  assert recs[-1]["train/loss"] < recs[0]["train/loss"]
  for name in ("item", "genre", "year_title", "feedback"):
    assert f"train/{name}_loss" in recs[-1]


@pytest.mark.long
def test_ctr_starts_from_the_pretrained_encoder(root):
  """post_init takes seq/ and copies each pretrained layer into the cross
  layer (K/V excluded); frozen, both stay as pretrained."""
  cfg = lib.set_fields(
      srp4ctr_ctr.get_config("dataset=synthetic,preset=tiny,freeze=true"),
      {**lib.tiny_overrides(root / "cache"), "train.max_steps": 2,
       "train.eval_every_steps": 2, "srp4ctr.pretrained": str(root / "pre"),
       "model.seq.hidden": 99})           # ignored: the pretraining's wins
  cfg.optim.freeze = [r"^seq/", r"^cross_"]
  res = lib.train(cfg, root / "ctr")
  assert "FG-BERT from" in res["init_rule"]
  _, pre = lib.final_params(root / "pre")
  _, ctr = lib.final_params(root / "ctr")
  jax.tree.map(np.testing.assert_array_equal, ctr["seq"], pre["seq"])
  layer = {k: v for k, v in pre["seq"]["layers_0"].items()
           if k not in ("key", "value")}
  jax.tree.map(np.testing.assert_array_equal, ctr["cross_0"], layer)
  assert 0.0 <= res["test/auc"] <= 1.0
