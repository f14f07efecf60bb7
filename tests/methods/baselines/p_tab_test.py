"""P-Tab: token masking, two pretraining steps, then finetuning from them.

* The transform masks only real, non-special tokens, labels them and
  nothing else, and is a function of (seed, epoch, row).
* ``auto_max_masked``: the binomial bound, at most the length.
* Two steps of P-Tab's MLM through ``train_and_evaluate`` (params ``plm``
  and ``mlm_head``; finite loss, no masked token dropped); then FLIP's
  PLM-only finetuning with ``init_from`` the P-Tab run, at learning rate 0:
  its PLM is exactly the P-Tab run's (not the public weights), and the MLM
  head is dropped.
"""
import math

import jax
import numpy as np
import pytest

from flip_jax.methods.baselines import p_tab
from flip_jax.models import plm as plm_lib

from tests.methods.baselines import bl_testlib  # pylint: disable=g-bad-import-order


def test_mask_batch_masks_real_non_special_tokens_only():
  rng = np.random.default_rng(0)
  b, length, cls_id, sep_id, pad_id, mask_id = 64, 20, 101, 102, 0, 103
  ids = rng.integers(1000, 2000, (b, length)).astype(np.int32)
  lengths = rng.integers(4, length + 1, b)
  real = np.arange(length)[None] < lengths[:, None]
  ids[:, 0] = cls_id
  ids[np.arange(b), lengths - 1] = sep_id
  ids[~real] = pad_id
  batch = {"input_ids": ids, "attention_mask": real.astype(np.int32)}
  kw = dict(prob=0.3, mask_token_id=mask_id, vocab_size=2000,
            special_token_ids=[cls_id, sep_id, pad_id])
  out = p_tab.mask_batch(batch, seed=1, epoch=0, index=np.arange(b), **kw)
  labels, masked = out["mlm_labels"], out["mlm_input_ids"]
  picked = labels != -100
  content = real & (ids != cls_id) & (ids != sep_id)
  assert picked.any() and not (picked & ~content).any()
  np.testing.assert_array_equal(labels[picked], ids[picked])
  np.testing.assert_array_equal(masked[~picked], ids[~picked])
  assert 0.15 < picked.sum() / content.sum() < 0.45
  assert 0.6 < (masked[picked] == mask_id).mean() < 0.95
  again = p_tab.mask_batch(batch, seed=1, epoch=0, index=np.arange(b), **kw)
  np.testing.assert_array_equal(again["mlm_labels"], labels)
  other = p_tab.mask_batch(batch, seed=1, epoch=1, index=np.arange(b), **kw)
  assert not np.array_equal(other["mlm_labels"], labels)


def test_auto_max_masked():
  assert p_tab.auto_max_masked(64, 0.15) == 22  # ceil(9.3 + 4 * 2.81) + 1
  assert p_tab.auto_max_masked(8, 0.9) == 8     # at most the length
  assert p_tab.auto_max_masked(100, 0.15) >= 15


@pytest.fixture(scope="module")
def pre_dir(tiny_bert_dir, bl_cache_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("p_tab_pre")
  cfg = bl_testlib.p_tab_cfg(tiny_bert_dir, bl_cache_dir)
  last = bl_testlib.train(cfg, workdir)
  return workdir, last


def test_two_pretraining_steps(pre_dir):
  workdir, last = pre_dir
  recs = bl_testlib.read_metrics(workdir)
  assert [r["step"] for r in recs] == [1, 2]
  for r in recs:
    assert math.isfinite(r["train/loss"])
    assert r["train/loss"] == r["train/mlm_loss"]
    assert r["train/mlm_masked_tokens"] > 0 and r["train/mlm_dropped"] == 0
  assert last["train/loss"] == recs[-1]["train/loss"]
  step, params = bl_testlib.final_params(workdir)
  assert step == 2 and set(params) == {"plm", "mlm_head"}
  assert set(params["mlm_head"]) == {"dense", "LayerNorm", "bias"}


def test_finetuning_from_p_tab_takes_its_plm(tiny_bert_dir, bl_cache_dir,
                                             pre_dir, tmp_path):
  pre, _ = pre_dir
  _, pre_params = bl_testlib.final_params(pre)
  _, public, _ = plm_lib.load_pretrained(str(tiny_bert_dir), num_layers=1)
  # Pretraining moved the PLM away from the public weights.
  assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
             zip(jax.tree.leaves(pre_params["plm"]), jax.tree.leaves(public)))
  cfg = bl_testlib.finetune_plm_cfg(tiny_bert_dir, bl_cache_dir, pre,
                                    **{"optim.lr": 0.0})
  res = bl_testlib.train(cfg, tmp_path / "ft")
  assert res["init_from"] == str(pre) and res["steps"] == 2
  assert res["init_rule"] == f"init_from {pre}"
  assert math.isfinite(res["test/auc"])
  _, ft = bl_testlib.final_params(tmp_path / "ft")
  assert set(ft) == {"plm", "txt_head"}
  jax.tree.map(np.testing.assert_array_equal, ft["plm"], pre_params["plm"])
