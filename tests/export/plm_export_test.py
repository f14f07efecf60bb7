"""Export to HF/PyTorch: clean loading, parity, bit-identical re-import, CLI."""
import io
import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers as hf
from absl import flags
from absl.testing import flagsaver

from experiments import export_torch
from flip_jax.export import hf_export
from flip_jax.models import plm

torch.set_num_threads(1)
ATOL = 1e-4


def tiny_hf(model_type, seed=0):
  if model_type == "bert":
    cfg = hf.BertConfig(vocab_size=97, hidden_size=16, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=24,
                        max_position_embeddings=32)
    model = hf.BertForMaskedLM(cfg)
  else:
    cfg = hf.RobertaConfig(vocab_size=97, hidden_size=16, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=24,
                           max_position_embeddings=34, pad_token_id=1,
                           type_vocab_size=1)
    model = hf.RobertaForMaskedLM(cfg)
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      p.copy_(1 + 0.1 * noise if name.endswith(("LayerNorm.weight",
                                                 "layer_norm.weight"))
              else 0.3 * noise)
  return model.eval()


def batch(cfg, seed=0):
  rng = np.random.default_rng(seed)
  mask = (np.arange(8)[None] < np.array([8, 5, 1])[:, None]).astype(np.int64)
  ids = np.where(mask == 1, rng.integers(3, cfg.vocab_size, mask.shape),
                 cfg.pad_token_id)
  return {"input_ids": ids, "attention_mask": mask}


def load_clean(cls, folder):
  model, info = cls.from_pretrained(str(folder), output_loading_info=True)
  assert not info["missing_keys"], info
  assert not info["mismatched_keys"], info
  return model.eval()


def run_torch(model, b):
  with torch.no_grad():
    return model(**{k: torch.from_numpy(v) for k, v in b.items()})


def flat(tree):
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in
          jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_round_trip_parity_and_bit_identical_reimport(tmp_path, model_type):
  src = tiny_hf(model_type)
  src.save_pretrained(str(tmp_path / "src"))
  module, params, _, report = plm.load_pretrained(
      tmp_path / "src", with_mlm_head=True, return_report=True)
  cfg = module.config
  out = hf_export.export_hf(cfg, params["encoder"], tmp_path / "out",
                            mlm_head_params=params["mlm_head"],
                            pooler=report.pooler)
  b = batch(cfg)
  ours = module.apply({"params": params}, jnp.asarray(b["input_ids"]),
                      jnp.asarray(b["attention_mask"]))
  base = load_clean(hf.AutoModel, out)
  mlm = load_clean(hf.AutoModelForMaskedLM, out)
  np.testing.assert_allclose(run_torch(base, b).last_hidden_state.numpy(),
                             ours["last_hidden_state"], atol=ATOL)
  np.testing.assert_allclose(run_torch(mlm, b).logits.numpy(),
                             ours["logits"], atol=ATOL)
  np.testing.assert_allclose(run_torch(mlm, b).logits.numpy(),
                             run_torch(src, b).logits.numpy(), atol=ATOL)
  # *ForMaskedLM checkpoints have no pooler: a seeded fresh one is written.
  assert report.pooler is None
  np.testing.assert_array_equal(
      base.pooler.dense.weight.detach().numpy(),
      hf_export.fresh_pooler(cfg)["pooler.dense.weight"])
  _, again, _, rep2 = plm.load_pretrained(out, with_mlm_head=True,
                                          return_report=True)
  assert rep2.unexpected == [] and not rep2.head_initialized
  a, c = flat(params), flat(again)
  assert a.keys() == c.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], c[k], err_msg=k)


def test_minilm_fresh_head_export_round_trip(tmp_path):
  module, params, tok, report = plm.load_pretrained(
      "minilm-l6", with_mlm_head=True, return_report=True)
  assert report.head_initialized
  assert "cls.predictions.bias" in report.missing_head
  cfg = module.config
  out = hf_export.export_hf(cfg, params["encoder"], tmp_path / "mini",
                            tokenizer=tok, pooler=report.pooler)
  # Without mlm_head_params the exporter writes the same seeded fresh head.
  jax.tree.map(np.testing.assert_array_equal,
               hf_export.fresh_head_params(cfg), params["mlm_head"])
  assert (out / "tokenizer.json").is_file() or (out / "vocab.txt").is_file()
  b = export_torch.make_check_batch(cfg, tok, 3)
  res = export_torch.check_export(out, cfg, params["encoder"], b,
                                  mlm_head_params=params["mlm_head"])
  assert res["missing"] == []
  assert res["hidden_max_abs_diff"] < ATOL and res["logits_max_abs_diff"] < ATOL
  # The checkpoint's own pooler survives the round trip.
  base = load_clean(hf.AutoModel, out)
  np.testing.assert_array_equal(base.pooler.dense.bias.detach().numpy(),
                                report.pooler["pooler.dense.bias"])
  tok2 = hf.AutoTokenizer.from_pretrained(str(out), local_files_only=True)
  assert tok2("Drama.")["input_ids"] == tok("Drama.")["input_ids"]


def test_export_is_atomic_and_accepts_boxed_bf16_params(tmp_path):
  cfg = plm.PLMConfig("bert", 50, 8, 1, 2, 16, 16)
  ids = jnp.zeros((1, 4), jnp.int32)
  boxed = plm.PLMEncoder(cfg, param_dtype=jnp.bfloat16).init(
      jax.random.key(0), ids, ids + 1)["params"]
  dest = tmp_path / "dest"
  hf_export.export_hf(cfg, boxed, dest)
  (dest / "stale.txt").write_text("left in an earlier export")
  hf_export.write_marker(dest, "hf_plm")  # listed: the export wrote it
  hf_export.export_hf(cfg, boxed, dest)  # replaces its own earlier export
  assert sorted(p.name for p in dest.iterdir()) == [
      "config.json", "flip_jax_export.json", "model.safetensors"]
  assert [p.name for p in tmp_path.iterdir()] == ["dest"]  # no temp dirs left
  model = load_clean(hf.AutoModelForMaskedLM, dest)
  assert model.config.num_hidden_layers == 1
  want = np.asarray(nn_unbox(boxed)["embeddings"]["word_embeddings"][
      "embedding"], np.float32)
  np.testing.assert_array_equal(
      model.bert.embeddings.word_embeddings.weight.detach().numpy(), want)
  bad = dict(nn_unbox(boxed))
  bad.pop("encoder")
  with pytest.raises(KeyError, match="params lack"):
    hf_export.export_hf(cfg, bad, tmp_path / "bad")
  assert not (tmp_path / "bad").exists()


def nn_unbox(tree):
  from flax import linen as nn  # pylint: disable=g-import-not-at-top
  return nn.meta.unbox(tree)


def test_cli_round_trip_with_check(tmp_path):
  tiny_hf("roberta", seed=5).save_pretrained(str(tmp_path / "src"))
  buf = io.StringIO()
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  with flagsaver.flagsaver(plm=str(tmp_path / "src"), out=str(tmp_path / "o"),
                           num_layers=1, check=True):
    with contextlib.redirect_stdout(buf):
      export_torch.main(["export_torch"])
  text = buf.getvalue()
  assert "exported roberta (1 layers, H=16)" in text
  diff = float(text.split("last_hidden_state max abs diff ")[1].split(",")[0])
  assert diff < ATOL and "missing []" in text
  assert hf.AutoConfig.from_pretrained(
      str(tmp_path / "o")).num_hidden_layers == 1
