"""Export of finetuned FLIP CTR models (id / plm / joint) to PyTorch.

A tiny `FlipCtrModel` with random weights (α = 0.3 so both branches matter)
is exported with `export_model`, reloaded with `FlipCtrTorch.from_pretrained`
and must give Flax's probabilities within 1e-5 on a padded batch; the
exported tensors map back to bit-identical Flax variables (BatchNorm running
statistics included).
"""
import contextlib
import dataclasses
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from absl import app
from absl import flags
from absl.testing import flagsaver
from flax import linen as nn

from experiments import export_torch
from experiments.configs import flip_finetune
from flip_jax import methods
from flip_jax import metrics
from flip_jax.export import ctr_mapping
from flip_jax.export import ctr_torch
from flip_jax.export import hf_export
from flip_jax.methods import run_export
from flip_jax.methods.flip import export as finetuned
from flip_jax.methods.flip import finetune_model as ft_lib
from flip_jax.models import ctr
from flip_jax.models import plm as plm_lib
from flip_jax.train import loop
from flip_jax.train import reload

torch.set_num_threads(1)

N, F, B = 50, 4, 6
TEXTS = ["User ID is 1. Gender is female.", "Movie ID is 1193.",
         "Title is One Flew Over the Cuckoo's Nest (1975). Genre is Drama.",
         "Zipcode is 48067.", "Age is 25-34.", "Job is writer."]


@pytest.fixture(scope="module")
def tiny_plm(tiny_bert_dir):
  module, params, tokenizer = plm_lib.load_pretrained(str(tiny_bert_dir))
  return module.config, params, tokenizer


def _batch(tokenizer, seed=0):
  enc = tokenizer(TEXTS[:B], padding="max_length", max_length=24,
                  truncation=True, return_tensors="np")
  assert (enc["attention_mask"] == 0).any()           # padding is exercised
  ids = np.random.default_rng(seed).integers(0, N, (B, F))
  return {"ids": ids.astype(np.int64),
          "input_ids": enc["input_ids"].astype(np.int64),
          "attention_mask": enc["attention_mask"].astype(np.int64)}


def _model(mode, plm_config, name="dcnv2", alpha_param="raw", **ctr_kw):
  ctr_cfg = None
  if mode != "plm":
    ctr_cfg = ctr.CTRConfig(name=name, num_features=N, num_fields=F,
                            embed_dim=8, dnn_hidden=(16, 8), low_rank=4,
                            num_experts=2, **ctr_kw)
  return ft_lib.FinetuneConfig(mode=mode, ctr=ctr_cfg,
                               plm=plm_config if mode != "id" else None,
                               alpha_param=alpha_param)


def _random_variables(ft_cfg, batch, plm_params, seed=0):
  """{'params': ..., ['batch_stats': ...]} with weights and statistics far
  from their initial values."""
  model = ft_lib.FlipCtrModel(ft_cfg)
  keys = {"id": ("ids",), "plm": ("input_ids", "attention_mask")}.get(
      ft_cfg.mode, ("ids", "input_ids", "attention_mask"))
  variables = jax.tree_util.tree_map(np.asarray, dict(nn.meta.unbox(
      jax.jit(model.init)(jax.random.key(seed),
                          {k: jnp.asarray(batch[k]) for k in keys}))))
  params = dict(variables.pop("params"))
  rng = np.random.default_rng(seed)
  if "batch_stats" in variables:     # running mean / var of BatchNorm
    variables["batch_stats"] = jax.tree_util.tree_map_with_path(
        lambda path, x: (np.exp(0.3 * rng.standard_normal(x.shape))
                         if path[-1].key == "var"
                         else 0.2 * rng.standard_normal(x.shape)
                         ).astype(np.float32), variables["batch_stats"])
  if "ctr" in params:                 # the tables are ~1e-4 at init
    params["ctr"] = jax.tree_util.tree_map(
        lambda x: (0.3 * rng.standard_normal(x.shape)).astype(np.float32),
        params["ctr"])
    params["ctr_bias"] = np.float32(0.1)
  if "plm" in params:
    params["plm"] = jax.tree_util.tree_map(np.asarray, plm_params)
    params["txt_head"] = {"kernel": (0.5 * rng.standard_normal(
        params["txt_head"]["kernel"].shape)).astype(np.float32),
                          "bias": np.full((1,), -0.2, np.float32)}
  if "alpha" in params:
    params["alpha"] = np.float32(0.3)
    params["out_bias"] = np.float32(0.05)
  return {"params": params, **variables}


@pytest.mark.parametrize("mode,ctr_kw", [
    ("joint", {}), ("id", {}), ("plm", {}),
    ("id", {"dnn_use_bn": True}),                  # BatchNorm statistics
    ("joint", {"name": "afn", "afn_ltl_hidden": 6})])  # AFN's own BatchNorm
def test_export_reload_matches_flax(mode, ctr_kw, tiny_plm, tmp_path):
  plm_config, plm_params, tokenizer = tiny_plm
  ft_cfg = _model(mode, plm_config, **ctr_kw)
  batch = _batch(tokenizer)
  params = _random_variables(ft_cfg, batch, plm_params)
  assert ("batch_stats" in params) == bool(ctr_kw)
  folder = finetuned.export_model(ft_cfg, params, tmp_path / "export",
                                  tokenizer=tokenizer, max_length=24,
                                  source={"test": mode})
  meta = json.loads((folder / ctr_torch.EXPORT_CONFIG).read_text())
  assert meta["mode"] == mode
  assert (folder / "plm").is_dir() == (mode != "id")
  if mode == "joint":
    assert meta["alpha"] == pytest.approx(0.3)
  model = ctr_torch.FlipCtrTorch.from_pretrained(folder)
  assert not model.training
  got = model.predict_proba(batch).numpy()
  want = finetuned.flax_probabilities(ft_cfg, params, batch)
  np.testing.assert_allclose(got, want["logit"], atol=1e-5, rtol=0)
  with torch.no_grad():
    logits = model(batch)
  assert set(logits) - {"alpha"} == set(want)
  for k, v in want.items():
    np.testing.assert_allclose(torch.sigmoid(logits[k]).numpy(), v,
                               atol=1e-5, rtol=0, err_msg=k)
  if mode == "joint":
    # Both branches matter: the mix differs from either branch alone.
    assert set(want) == {"logit", "ctr/logit", "txt/logit"}
    assert np.abs(want["logit"] - want["ctr/logit"]).max() > 1e-3
    assert np.abs(want["logit"] - want["txt/logit"]).max() > 1e-3
  # Importing the export gives the same model and bit-identical params
  # (PLM included, through the HF import table).
  back_cfg, back = finetuned.load_export(folder)
  assert (back_cfg.mode, back_cfg.ctr, back_cfg.plm) == (
      mode, ft_cfg.ctr, ft_cfg.plm)
  flat_back = ctr_mapping.flatten(back)
  flat_in = ctr_mapping.flatten(params)
  assert set(flat_back) == set(flat_in)
  for k, v in flat_in.items():
    assert np.array_equal(np.asarray(flat_back[k]),
                          np.asarray(v, np.float32)), k


def test_sigmoid_alpha_and_other_backbone(tiny_plm, tmp_path):
  plm_config, plm_params, tokenizer = tiny_plm
  ft_cfg = _model("joint", plm_config, name="autoint", alpha_param="sigmoid")
  batch = _batch(tokenizer, seed=1)
  params = _random_variables(ft_cfg, batch, plm_params, seed=1)
  folder = finetuned.export_model(ft_cfg, params, tmp_path / "x")
  meta = json.loads((folder / ctr_torch.EXPORT_CONFIG).read_text())
  assert meta["alpha"] == pytest.approx(1 / (1 + np.exp(-0.3)))
  assert meta["backbone"] == "autoint"
  assert max(finetuned.compare_export(folder, ft_cfg, params,
                                     batch).values()) <= 1e-5


def test_bfloat16_run_is_checked_against_its_float32_computation(
    tiny_plm, tmp_path):
  plm_config, plm_params, tokenizer = tiny_plm
  ft_cfg = _model("id", plm_config)
  ft_cfg = dataclasses.replace(
      ft_cfg, ctr=dataclasses.replace(ft_cfg.ctr, dtype="bfloat16"),
      dtype=jnp.bfloat16)
  batch = _batch(tokenizer, seed=2)
  params = _random_variables(ft_cfg, batch, plm_params, seed=2)
  folder = finetuned.export_model(ft_cfg, params, tmp_path / "bf16")
  assert finetuned.float32_config(ft_cfg).ctr.dtype == "float32"
  assert max(finetuned.compare_export(folder, ft_cfg, params,
                                     batch).values()) <= 1e-5


def test_export_replaces_atomically_and_fails_cleanly(tiny_plm, tmp_path):
  plm_config, plm_params, tokenizer = tiny_plm
  ft_cfg = _model("id", plm_config)
  params = _random_variables(ft_cfg, _batch(tokenizer), plm_params)
  # A folder that is not an earlier export is refused and left as it was.
  other = tmp_path / "other"
  other.mkdir()
  (other / "stale.txt").write_text("old")
  with pytest.raises(hf_export.ExportDestinationError,
                     match="not an earlier export"):
    finetuned.export_model(ft_cfg, params, other)
  assert [p.name for p in other.iterdir()] == ["stale.txt"]
  # An earlier export is replaced as a whole (the files it wrote go too);
  # one holding a file it did not write is refused, the file kept.
  out = tmp_path / "export"
  finetuned.export_model(ft_cfg, params, out)
  (out / "stale.txt").write_text("old")
  with pytest.raises(hf_export.ExportDestinationError,
                     match=r"did not write: \['stale.txt'\]"):
    finetuned.export_model(ft_cfg, params, out)
  assert (out / "stale.txt").read_text() == "old"
  hf_export.write_marker(out, "flip_ctr")  # as if the export had written it
  finetuned.export_model(ft_cfg, params, out)
  assert not (out / "stale.txt").exists()
  bad = {"params": dict(params["params"])}
  del bad["params"]["ctr_bias"]
  with pytest.raises(KeyError, match="ctr_bias"):
    finetuned.export_model(ft_cfg, bad, out)
  # The failed export left the previous folder intact and no temp dirs.
  assert (out / ctr_torch.CTR_WEIGHTS).exists()
  assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "other"]
  (out / ctr_torch.EXPORT_CONFIG).write_text("{not json")
  with pytest.raises(ValueError, match="flip_ctr.json: invalid JSON"):
    ctr_torch.FlipCtrTorch.from_pretrained(out)
  with pytest.raises(FileNotFoundError, match="no flip_ctr.json"):
    ctr_torch.FlipCtrTorch.from_pretrained(tmp_path)


def _joint_run(tiny_bert_dir, root):
  """A 2-step joint finetuning run on tiny synthetic data."""
  cfg = flip_finetune.get_config("dataset=synthetic,mode=joint,preset=tiny")
  cfg.model.plm.name = str(tiny_bert_dir)
  cfg.model.ctr.update(embed_dim=8, dnn_hidden=(16, 8), low_rank=4)
  cfg.data.cache_dir = str(root / "cache")
  cfg.data.synthetic.update(num_users=30, num_movies=20, num_ratings=300)
  cfg.train.update(max_steps=2, eval_every_steps=2)
  results = loop.train_and_evaluate(cfg, str(root / "wd"),
                                    methods.make_task(cfg))
  return root / "wd", results


def test_export_finetuned_end_to_end_and_cli(tiny_bert_dir, tmp_path):
  workdir, results = _joint_run(tiny_bert_dir, tmp_path / "run")
  out = tmp_path / "torch"
  diff = run_export.export_run(workdir, out, check=True, num_rows=64)
  assert 0.0 <= diff <= run_export.CHECK_ATOL
  meta = json.loads((out / ctr_torch.EXPORT_CONFIG).read_text())
  assert meta["mode"] == "joint" and meta["backbone"] == "dcnv2"
  assert meta["alpha"] == pytest.approx(results["alpha"], abs=1e-7)
  assert meta["source"]["best_step"] == results["best_step"]
  assert (out / "feature_map.json").exists()
  assert (out / "plm" / "tokenizer.json").exists()
  # The torch model reproduces the run's test AUC over the whole split.
  run = reload.load_run(str(workdir))
  test = run.data.eval_splits["test"]
  fmap = run.data.feature_map
  assert meta["feature_map"]["num_features"] == fmap.num_features
  model = ctr_torch.FlipCtrTorch.from_pretrained(out)
  prob = model.predict_proba({k: np.asarray(test[k]) for k in
                              ("ids", "input_ids", "attention_mask")}).numpy()
  assert metrics.auc(test["label"], prob) == pytest.approx(
      results["test/auc"], abs=1e-6)
  # The CLI (same run; one training run per test keeps xdist cheap). --plm
  # is pinned: run_all, imported by other tests of this worker, shares the
  # flag with its own default (launch.flag: the first definition wins).
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  buf = io.StringIO()
  with flagsaver.flagsaver(workdir=str(workdir), out=str(tmp_path / "o"),
                           check=False, plm=None):
    with contextlib.redirect_stdout(buf):
      export_torch.main(["export_torch"])
  assert f"exported finetuned model of {workdir}" in buf.getvalue()
  again = ctr_torch.FlipCtrTorch.from_pretrained(tmp_path / "o")
  np.testing.assert_array_equal(again.alpha.detach().numpy(),
                                model.alpha.detach().numpy())
  with flagsaver.flagsaver(workdir=str(workdir), out=None, plm=None):
    with pytest.raises(app.UsageError, match="--workdir needs --out"):
      export_torch.main(["export_torch"])
