"""Finetuning from a tiny pretraining run: init_from, modes, resume, predict."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments.configs import flip_finetune
from flip_jax import checkpoint

from tests.methods.flip import pretrain_loop_test as ptest  # pylint: disable=g-bad-import-order

FT_OVERRIDES = {
    "train.batch_size": 32, "train.eval_batch_size": 64,
    "train.eval_every_steps": 10, "train.max_steps": 30,
    "log_every_steps": 5,
}

set_fields = ptest.set_fields


def ft_config(plm_dir, cache_dir, mode, init_from="", **extra):
  cfg = flip_finetune.get_config(f"dataset=synthetic,preset=tiny,mode={mode}")
  tiny = {k: v for k, v in ptest.tiny_overrides(plm_dir, cache_dir).items()
          if k.startswith(("model.", "data."))}
  set_fields(cfg, {**tiny, **FT_OVERRIDES, **extra})
  cfg.ckpt.init_from = init_from
  return cfg


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("ft_cache")


@pytest.fixture(scope="module")
def pre_dir(tiny_bert_dir, cache_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("pre")
  cfg = ptest.make_config(tiny_bert_dir, cache_dir,
                          **{"train.max_steps": 4, "ckpt.every_steps": 4})
  ptest.train(cfg, workdir)
  return workdir


@pytest.fixture(scope="module")
def runs(tiny_bert_dir, cache_dir, pre_dir, tmp_path_factory):
  """One finetuning run per mode (shared by the tests below)."""
  out = {}
  for mode in ("id", "plm", "joint"):
    workdir = tmp_path_factory.mktemp(f"ft_{mode}")
    extra = ({"train.num_epochs": 2} if mode == "id"
             else {"train.max_steps": 20})
    cfg = ft_config(tiny_bert_dir, cache_dir, mode, str(pre_dir), **extra)
    out[mode] = (workdir, cfg, ptest.train(cfg, workdir))
  return out


@pytest.mark.long
def test_joint_from_pretraining_keeps_intended_subtrees(pre_dir, runs):
  workdir, cfg, res = runs["joint"]
  assert res["init_from"] == str(pre_dir)
  pre = checkpoint.restore_params(str(pre_dir))
  # The first checkpoint (step 10) is 10 AdamW steps from the loaded values:
  # each step moves a weight by at most ~lr.
  ft = checkpoint.restore_params(str(workdir), step=10)
  bound = 10 * 1.5 * cfg.optim.lr
  for top, sub in (("ctr", "embedding"), ("plm", "embeddings")):
    for a, b in zip(jax.tree.leaves(pre[top][sub]),
                    jax.tree.leaves(ft[top][sub])):
      assert np.max(np.abs(a - b)) <= bound
  # Pretraining-only heads are gone; finetuning heads exist.
  assert not {"mlm_head", "mtm_head", "nce", "ctr_proj", "txt_proj"} & set(ft)
  assert {"alpha", "out_bias", "txt_head", "ctr_bias"} <= set(ft)
  assert "linear" in ft["ctr"] and "head" in ft["ctr"]


@pytest.mark.parametrize("mode", ["id", "plm", "joint"])
def test_modes_train_select_on_valid_and_write_results(runs, mode):
  workdir, _, res = runs[mode]
  for key in ("valid/auc", "valid/logloss", "test/auc", "test/logloss",
              "best_step", "examples_per_sec", "init_from"):
    assert key in res, key
  with open(workdir / "results.json") as f:
    assert json.load(f)["best_step"] == res["best_step"]
  recs = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  valid = {r["step"]: r["valid/auc"] for r in recs if "valid/auc" in r}
  assert res["best_step"] == max(valid, key=valid.get)
  np.testing.assert_allclose(res["valid/auc"], valid[res["best_step"]],
                             rtol=1e-6)
  if mode == "joint":
    assert res["alpha"] != 0.0  # learned from 0
    assert "valid/ctr_auc" in res and "valid/txt_auc" in res


def test_resume_mid_finetune_equals_uninterrupted(
    tiny_bert_dir, cache_dir, pre_dir, runs, tmp_path):
  _, _, full = runs["joint"]
  ptest.train(
      ft_config(tiny_bert_dir, cache_dir, "joint", str(pre_dir),
                **{"train.max_steps": 10}), tmp_path)
  part = ptest.train(
      ft_config(tiny_bert_dir, cache_dir, "joint", str(pre_dir),
                **{"train.max_steps": 20}), tmp_path)
  assert part["init_rule"].startswith("resume")
  for key in ("valid/auc", "test/auc", "test/logloss", "alpha", "best_step"):
    assert part[key] == full[key], key


def test_predict_writes_probabilities(runs):
  workdir, _, res = runs["id"]
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  out = workdir / "preds.parquet"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.predict", f"--workdir={workdir}",
       f"--out={out}", "--split=test", "--batch_size=64"],
      cwd=ptest.REPO, env=env, capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "test:" in proc.stdout
  table = pq.read_table(out).to_pydict()
  probs = np.asarray(table["prob"])
  assert len(probs) == len(set(table["row_id"])) > 0
  assert np.all((probs > 0) & (probs < 1))
  from flip_jax import metrics  # pylint: disable=g-import-not-at-top
  np.testing.assert_allclose(metrics.auc(np.asarray(table["label"]), probs),
                             res["test/auc"], rtol=1e-6)
