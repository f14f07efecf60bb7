"""HF checkpoint import: parity with transformers, truncation, errors."""
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers as hf
from safetensors.numpy import load_file
from safetensors.numpy import save_file

from flip_jax.models import plm
from flip_jax.models.plm import hf_names

torch.set_num_threads(1)
ATOL = 1e-4


def hf_config(model_type, layers=3):
  cls = hf.BertConfig if model_type == "bert" else hf.RobertaConfig
  return cls(vocab_size=99, hidden_size=16, num_hidden_layers=layers,
             num_attention_heads=4, intermediate_size=32,
             max_position_embeddings=40, type_vocab_size=2,
             hidden_act="gelu", pad_token_id=0 if model_type == "bert" else 1)


def randomize(model, seed=0):
  """Non-trivial weights everywhere (HF zero-inits biases, ones LN scales)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      p.copy_(1.0 + 0.1 * noise if "LayerNorm.weight" in name
              or "layer_norm.weight" in name else 0.3 * noise)
  return model.eval()


def save_hf(model, path):
  model.save_pretrained(str(path))
  return path


def make_batch(model_type, b=4, length=9, seed=0):
  rng = np.random.default_rng(seed)
  pad = 0 if model_type == "bert" else 1
  lens = np.array([length, 6, 2, 1][:b])
  mask = (np.arange(length)[None] < lens[:, None]).astype(np.int64)
  ids = np.where(mask == 1, rng.integers(3, 99, (b, length)), pad)
  types = (np.where(mask == 1, rng.integers(0, 2, (b, length)), 0)
           if model_type == "bert" else np.zeros_like(ids))
  return ids, mask, types


def ours(module, params, ids, mask, types):
  return module.apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask),
                      jnp.asarray(types))


def torch_out(model, ids, mask, types, **kw):
  with torch.no_grad():
    return model(input_ids=torch.from_numpy(ids),
                 attention_mask=torch.from_numpy(mask),
                 token_type_ids=torch.from_numpy(types), **kw)


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_base_model_parity(tmp_path, model_type):
  cls = hf.BertModel if model_type == "bert" else hf.RobertaModel
  model = randomize(cls(hf_config(model_type)))
  folder = save_hf(model, tmp_path / "m")
  module, params, tok, report = plm.load_pretrained(folder,
                                                     return_report=True)
  assert tok is None and report.prefix == ""
  assert report.unexpected == [] and report.loaded == 5 + 16 * 3
  assert sorted(report.ignored) == ["pooler.dense.bias", "pooler.dense.weight"]
  ids, mask, types = make_batch(model_type)
  want = torch_out(model, ids, mask, types).last_hidden_state.numpy()
  got = ours(module, params, ids, mask, types)
  # All positions, padded ones included: both sides compute them the same.
  np.testing.assert_allclose(got["last_hidden_state"], want, atol=ATOL)
  np.testing.assert_allclose(got["cls"], want[:, 0], atol=ATOL)


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_masked_lm_parity_with_prefixed_keys(tmp_path, model_type):
  cls = (hf.BertForMaskedLM if model_type == "bert"
         else hf.RobertaForMaskedLM)
  model = randomize(cls(hf_config(model_type)), seed=1)
  folder = save_hf(model, tmp_path / "m")
  module, params, _, report = plm.load_pretrained(
      folder, with_mlm_head=True, return_report=True)
  assert isinstance(module, plm.PLMForMaskedLM)
  assert report.prefix == f"{model_type}." and not report.head_initialized
  assert report.unexpected == [] and report.missing_head == []
  ids, mask, types = make_batch(model_type, seed=2)
  want = torch_out(model, ids, mask, types).logits.numpy()
  got = ours(module, params, ids, mask, types)["logits"]
  np.testing.assert_allclose(got, want, atol=ATOL)
  # Asking for the encoder only reports the head as ignored, not unexpected.
  _, _, _, rep = plm.load_pretrained(folder, return_report=True)
  head_keys = {k for _, k, _ in hf_names.head_rows(module.config)}
  assert rep.unexpected == [] and head_keys <= set(rep.ignored)
  assert len(head_keys) == 5


def test_pytorch_bin_and_truncation(tmp_path):
  model = randomize(hf.BertModel(hf_config("bert", layers=3)), seed=3)
  folder = tmp_path / "bin"
  folder.mkdir()
  (folder / "config.json").write_text(model.config.to_json_string())
  torch.save({"bert." + k: v for k, v in model.state_dict().items()},
             folder / "pytorch_model.bin")
  ids, mask, types = make_batch("bert", seed=4)
  states = torch_out(model, ids, mask, types,
                     output_hidden_states=True).hidden_states
  for n in (1, 2):
    module, params, _, report = plm.load_pretrained(
        folder, num_layers=n, return_report=True)
    assert report.weights_file.endswith("pytorch_model.bin")
    assert module.config.num_layers == n
    assert len(report.truncated) == 16 * (3 - n)
    assert set(params["encoder"]) == {f"layer_{i}" for i in range(n)}
    got = ours(module, params, ids, mask, types)["last_hidden_state"]
    np.testing.assert_allclose(got, states[n].numpy(), atol=ATOL)


def test_dropout_override_and_dtypes(tmp_path):
  folder = save_hf(randomize(hf.BertModel(hf_config("bert"))), tmp_path / "m")
  module, params, _ = plm.load_pretrained(
      folder, dropout=0.0, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16,
      remat=True)
  assert module.config.hidden_dropout == module.config.attention_dropout == 0
  assert module.remat and module.dtype == jnp.bfloat16
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("bfloat16")}
  ids, mask, types = make_batch("bert")
  out = ours(module, params, ids, mask, types)["last_hidden_state"]
  assert out.dtype == jnp.bfloat16 and np.isfinite(
      np.asarray(out, np.float32)).all()


def test_bad_inputs_give_clear_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="neither a known short name"):
    plm.load_pretrained(tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match="no config.json"):
    plm.load_pretrained(tmp_path)
  model = randomize(hf.BertModel(hf_config("bert", layers=1)))
  folder = save_hf(model, tmp_path / "m")
  cfg = json.loads((folder / "config.json").read_text())

  def variant(name, config=None, tensors=None):
    path = tmp_path / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config or cfg))
    if tensors is not None:
      save_file(tensors, str(path / "model.safetensors"))
    return path

  with pytest.raises(FileNotFoundError, match="no weights"):
    plm.load_pretrained(variant("empty"))
  with pytest.raises(ValueError, match=r"config.json: .*unsupported"
                     r" model_type 'gpt2'; supported: bert, roberta"):
    plm.load_pretrained(variant("gpt", dict(cfg, model_type="gpt2"), {}))
  tensors = load_file(str(folder / "model.safetensors"))
  with pytest.raises(ValueError, match=r"shape mismatch for"
                     r" encoder.layer.0.intermediate.dense.weight: checkpoint"
                     r" \(32, 16\).*expects \(16, 48\)"):
    plm.load_pretrained(variant("shape", dict(cfg, intermediate_size=48),
                                tensors))
  with pytest.raises(ValueError, match=r"model.safetensors: no"
                     r" 'embeddings.word_embeddings.weight' under any prefix"):
    plm.load_pretrained(variant("nowte", cfg, {"x.weight": np.zeros(2)}))
  broken = dict(tensors)
  del broken["encoder.layer.0.output.dense.bias"]
  with pytest.raises(ValueError, match="missing encoder weights.*output.dense"):
    plm.load_pretrained(variant("missing", cfg, broken))
  with pytest.raises(ValueError, match="num_layers=2 outside"):
    plm.load_pretrained(folder, num_layers=2)
  bad_json = variant("json")
  (bad_json / "config.json").write_text("{\n  'x': 1\n}")
  with pytest.raises(ValueError, match="invalid JSON at line 2"):
    plm.load_pretrained(bad_json)
  extra = dict(tensors, **{"foo.bar": np.zeros(3, np.float32)})
  _, _, _, report = plm.load_pretrained(variant("extra", cfg, extra),
                                        return_report=True)
  assert report.unexpected == ["foo.bar"]
  assert "UNEXPECTED ['foo.bar']" in str(report)


def test_minilm_real_weights_parity():
  path = plm.resolve_path("minilm-l6")
  assert path == pathlib.Path(path).resolve() and (path / "vocab.txt").is_file()
  module, params, tok, report = plm.load_pretrained("minilm-l6",
                                                    return_report=True)
  assert module.config.num_layers == 6 and module.config.hidden_size == 384
  assert report.unexpected == [] and "embeddings.position_ids" in report.ignored
  texts = ["User ID is 1. Gender is female. Age is under 18.",
           "Title is One Flew Over the Cuckoo's Nest (1975).", "Drama."]
  enc = tok(texts, padding=True, return_tensors="np")
  ids, mask = enc["input_ids"], enc["attention_mask"]
  types = np.zeros_like(ids)
  model = hf.AutoModel.from_pretrained(str(path)).eval()
  want = torch_out(model, ids, mask, types).last_hidden_state.numpy()
  got = ours(module, params, ids, mask, types)["last_hidden_state"]
  np.testing.assert_allclose(got, want, atol=ATOL)
