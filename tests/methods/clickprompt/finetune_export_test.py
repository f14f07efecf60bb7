"""Finetuning from a tiny PA-MLM run on the shared loop, and the PyTorch
exports of both forms (ctr_only as the plain CTR model, prefix_add as one
module) with max |p_torch - p_flax| <= 1e-5 on test rows."""
import json

import pytest
import transformers

from experiments import scoring
from experiments.configs import clickprompt_finetune
from flip_jax import checkpoint
from flip_jax.methods import run_export
from flip_jax.methods.clickprompt import export
from tests.methods.clickprompt import pretrain_loop_test as pre_lib


def _finetune_config(plm_dir, cache_dir, mode, init_from, **extra):
  cfg = clickprompt_finetune.get_config(
      f"dataset=synthetic,preset=tiny,mode={mode}")
  base = pre_lib.tiny_config(plm_dir, cache_dir)
  cfg.model = base.model
  cfg.data = base.data
  cfg.clickprompt.num_prompt = 3
  cfg.ckpt.init_from = str(init_from)
  cfg.train.update(max_steps=6, eval_every_steps=3)
  cfg.log_every_steps = 3
  for key, value in extra.items():
    cfg.clickprompt[key] = value
  return cfg


@pytest.fixture(scope="module")
def pa_mlm(tiny_bert_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp("cp")
  cfg = pre_lib.tiny_config(tiny_bert_dir, root / "cache",
                            **{"train.max_steps": 2, "ckpt.every_steps": 2})
  pre_lib.train(cfg, root / "pre")
  return root


@pytest.mark.timeout(600)
def test_ctr_only_exports_as_the_plain_ctr_model(tiny_bert_dir, pa_mlm):
  cfg = _finetune_config(tiny_bert_dir, pa_mlm / "cache", "ctr_only",
                         pa_mlm / "pre")
  res = pre_lib.train(cfg, pa_mlm / "ctr_only")
  assert res["init_rule"].startswith("init_from")
  assert 0.0 < res["test/auc"] < 1.0
  params = checkpoint.restore_params(pa_mlm / "ctr_only")
  assert set(params) == {"ctr", "ctr_head"}     # no PLM, no generator
  diff = run_export.export_run(pa_mlm / "ctr_only", pa_mlm / "ctr_torch",
                               check=True, num_rows=64)
  assert diff <= 1e-5
  meta = json.loads((pa_mlm / "ctr_torch" / "flip_ctr.json").read_text())
  assert meta["mode"] == "id" and meta["ctr_config"]["cross_type"] == "full"


@pytest.mark.long
@pytest.mark.timeout(600)
def test_prefix_add_exports_as_one_module(tiny_bert_dir, pa_mlm):
  cfg = _finetune_config(tiny_bert_dir, pa_mlm / "cache", "prefix_add",
                         pa_mlm / "pre", pooler="avg_first_last",
                         prompt_usage="cat")
  res = pre_lib.train(cfg, pa_mlm / "prefix_add")
  for key in ("test/auc", "test/ctr_auc", "test/txt_auc", "alpha"):
    assert key in res, key
  assert res["num_prompt"] == 3 and res["prompt_usage"] == "cat"
  out = pa_mlm / "prefix_add_torch"
  diff = run_export.export_run(pa_mlm / "prefix_add", out, check=True,
                               num_rows=64)
  assert diff <= 1e-5
  meta = json.loads((out / export.META).read_text())
  assert meta["mode"] == "prefix_add" and meta["pooler"] == "avg_first_last"
  # The PLM part is also a plain Hugging Face folder.
  transformers.AutoModel.from_pretrained(str(out / export.PLM_DIR))
  # predict's scoring (the one loader of every method) gives the test AUC
  # of both branches and their mix as the run's final evaluation did.
  _, metrics = scoring.score_splits(str(pa_mlm / "prefix_add"), ["test"],
                                    batch_size=32)
  for key in ("test/auc", "test/ctr_auc", "test/txt_auc"):
    assert metrics["test"][key] == pytest.approx(res[key], abs=1e-6), key
