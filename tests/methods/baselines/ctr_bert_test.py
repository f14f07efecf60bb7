"""CTR-BERT: the forward on a tiny random BERT, and two steps of the loop.

* Forward: the logit is the prediction layer of [user [CLS] ; item [CLS]],
  each [CLS] from its own tower (recomputed here with PLMEncoder alone);
  separate towers have params ``user_plm`` / ``item_plm``, a shared PLM one
  ``plm``; each tower reads only its own text.
* Two steps through ``train_and_evaluate`` on synthetic data: finite losses,
  valid / test AUC in results.json; both towers started from the public
  weights and were trained apart.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from experiments import scoring
from flip_jax.methods import run_export
from flip_jax.methods.baselines import ctr_bert
from flip_jax.models import plm as plm_lib

from tests.methods.baselines import bl_testlib  # pylint: disable=g-bad-import-order


@pytest.fixture(scope="module")
def plm(tiny_bert_dir):
  module, params, _ = plm_lib.load_pretrained(str(tiny_bert_dir),
                                              num_layers=1)
  return module, params


def _batch(vocab, b=3, lu=7, li=9, seed=0):
  rng = np.random.default_rng(seed)
  out = {}
  for side, n in (("user", lu), ("item", li)):
    ids = rng.integers(1000, vocab, (b, n)).astype(np.int32)
    ids[:, 0] = 101
    mask = np.ones((b, n), np.int32)
    mask[1, n - 2:] = 0  # a padded row
    out[f"{side}_input_ids"], out[f"{side}_attention_mask"] = ids, mask
  return out


@pytest.mark.parametrize("share", [False, True])
def test_forward_is_the_head_of_both_cls_states(plm, share):
  module, public = plm
  model = ctr_bert.CtrBertModel(ctr_bert.CtrBertConfig(
      plm=module.config, share_plm=share, mlp_hidden=16, mlp_dropout=0.2))
  batch = _batch(module.config.vocab_size)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), batch)["params"])
  apply = jax.jit(model.apply)
  towers = ("plm",) if share else ("user_plm", "item_plm")
  assert set(params) == set(towers) | {"head"}
  assert set(params["head"]) == {"dense", "out"}
  assert params["head"]["dense"]["kernel"].shape == (
      2 * module.config.hidden_size, 16)
  # The towers take the public weights (as post_init puts them).
  params = {**params, **{t: public for t in towers}}
  logit = apply({"params": params}, batch)["logit"]
  assert logit.shape == (3,) and np.isfinite(np.asarray(logit)).all()
  enc = plm_lib.PLMEncoder(module.config)
  cls = [jax.jit(enc.apply)({"params": public}, batch[f"{s}_input_ids"],
                            batch[f"{s}_attention_mask"])["cls"]
         for s in ("user", "item")]
  head = ctr_bert.PredictionLayer(16, 0.2)
  want = head.apply({"params": params["head"]}, jnp.concatenate(cls, -1),
                    deterministic=True)
  np.testing.assert_allclose(logit, want, rtol=1e-5, atol=1e-6)
  # Each tower reads its own text only: new item tokens move the logit,
  # and item tokens under a zero mask do not.
  other = dict(batch, item_input_ids=_batch(module.config.vocab_size,
                                            seed=1)["item_input_ids"])
  assert not np.allclose(apply({"params": params}, other)["logit"],
                         logit)
  padded = dict(batch, item_input_ids=batch["item_input_ids"].copy())
  padded["item_input_ids"][1, -2:] = 7
  np.testing.assert_allclose(
      apply({"params": params}, padded)["logit"], logit, rtol=1e-5,
      atol=1e-6)


def test_two_steps_through_the_loop(tiny_bert_dir, bl_cache_dir, plm,
                                   tmp_path):
  cfg = bl_testlib.ctr_bert_cfg(tiny_bert_dir, bl_cache_dir)
  res = bl_testlib.train(cfg, tmp_path / "run")
  recs = bl_testlib.read_metrics(tmp_path / "run")
  assert [r["step"] for r in recs] == [1, 2]
  assert all(math.isfinite(r["train/loss"]) for r in recs)
  assert res["task"] == "ctr_bert" and res["steps"] == 2
  for key in ("valid/auc", "valid/logloss", "test/auc", "test/logloss"):
    assert math.isfinite(res[key]), key
  assert res["share_plm"] is False and res["user_fields"][0] == "user_id"
  assert "two PLM towers from public weights" in res["init_rule"]
  step, params = bl_testlib.final_params(tmp_path / "run")
  assert step == 2 and set(params) == {"user_plm", "item_plm", "head"}
  _, public = plm
  bound = 2 * 1.5 * cfg.optim.lr  # two AdamW steps from the public weights
  for tower in ("user_plm", "item_plm"):
    for a, b in zip(jax.tree.leaves(params[tower]), jax.tree.leaves(public)):
      assert np.max(np.abs(np.asarray(a) - np.asarray(b))) <= bound
  # Trained apart: the towers saw other texts, so their updates differ.
  u = params["user_plm"]["embeddings"]["word_embeddings"]["embedding"]
  i = params["item_plm"]["embeddings"]["word_embeddings"]["embedding"]
  assert not np.array_equal(np.asarray(u), np.asarray(i))
  # The finished run scores and exports through the one seam: predict's
  # scoring reproduces its test AUC, the PyTorch twin its probabilities.
  _, scored = scoring.score_splits(str(tmp_path / "run"), ["test"],
                                   batch_size=cfg.train.eval_batch_size)
  assert scored["test"]["test/auc"] == pytest.approx(res["test/auc"],
                                                     abs=1e-6)
  out = tmp_path / "torch"
  diff = run_export.export_run(tmp_path / "run", out, check=True,
                               num_rows=32)
  assert 0.0 <= diff <= run_export.CHECK_ATOL
  assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
      "item_plm", "user_plm"]
