"""CTR-BERT to PyTorch: the exporter of the ``ctr_bert`` task (the contract
of `flip_jax.methods.run_export`).

Folder layout:

  ctr_bert.json            share_plm, head sizes, the towers' fields and
                           input contract, the source run
  head.safetensors         the prediction layer (dense.*, out.*; torch
                           Linear layout)
  user_plm/, item_plm/     Hugging Face folders of the two towers (or one
                           plm/ when ``share_plm``), written by
                           `hf_export.export_hf` with the tokenizer
  feature_map.json

`CtrBertTorch.from_pretrained(folder)` rebuilds the model: each tower's
first-token state (no pooler), concatenated, through Linear -> tanh ->
Linear, as `ctr_bert.CtrBertModel`.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import torch
from safetensors.numpy import save_file
from safetensors.torch import load_file

from flip_jax import jsonio
from flip_jax.export import ctr_torch
from flip_jax.export import hf_export
from flip_jax.methods.baselines import ctr_bert
from flip_jax.methods.baselines import towers as towers_lib

META = "ctr_bert.json"
HEAD = "head.safetensors"
FORMAT_VERSION = 1


def _tower_dirs(share_plm: bool) -> dict[str, str]:
  """{side: folder} of the towers (one folder for a shared PLM)."""
  return {side: ("plm" if share_plm else f"{side}_plm")
          for side in towers_lib.SIDES}


class CtrBertTorch(torch.nn.Module):
  """The PyTorch twin of `ctr_bert.CtrBertModel` (eval-mode parity)."""

  def __init__(self, meta: dict, encoders: dict[str, torch.nn.Module]):
    super().__init__()
    self.meta = meta
    self.encoders = torch.nn.ModuleDict(encoders)
    self.sides = _tower_dirs(meta["share_plm"])
    width = 2 * meta["hidden_size"]
    self.dense = torch.nn.Linear(width, meta["mlp_hidden"])
    self.out = torch.nn.Linear(meta["mlp_hidden"], 1)

  def forward(self, batch) -> dict[str, torch.Tensor]:
    cls = []
    for side in towers_lib.SIDES:
      enc = self.encoders[self.sides[side]]
      state = enc(input_ids=torch.as_tensor(batch[f"{side}_input_ids"]),
                  attention_mask=torch.as_tensor(
                      batch[f"{side}_attention_mask"])).last_hidden_state
      cls.append(state[:, 0])
    h = torch.tanh(self.dense(torch.cat(cls, dim=-1)))
    return {"logit": self.out(h)[..., 0]}

  @classmethod
  def from_pretrained(cls, path) -> "CtrBertTorch":
    """Loads an export folder; returns the model in eval mode."""
    path = pathlib.Path(path)
    meta = jsonio.read_json(path / META)
    if meta.get("format_version") != FORMAT_VERSION:
      raise ValueError(f"{path / META}: format_version "
                       f"{meta.get('format_version')!r} != {FORMAT_VERSION}")
    folders = sorted(set(_tower_dirs(meta["share_plm"]).values()))
    model = cls(meta, {f: ctr_torch.load_hf_encoder(path / f)
                       for f in folders})
    head = load_file(str(path / HEAD))
    info = model.load_state_dict(head, strict=False)
    missing = [k for k in info.missing_keys if not k.startswith("encoders.")]
    if missing or info.unexpected_keys:
      raise ValueError(f"{path / HEAD}: missing {missing}, unexpected "
                       f"{info.unexpected_keys}")
    return model.eval()


def _head_tensors(params) -> dict[str, np.ndarray]:
  head = jax.device_get(params["head"])
  out = {}
  for name in ("dense", "out"):
    out[f"{name}.weight"] = np.ascontiguousarray(
        np.asarray(head[name]["kernel"], np.float32).T)
    out[f"{name}.bias"] = np.asarray(head[name]["bias"], np.float32)
  return out


def write(run, out_dir: pathlib.Path, source: dict) -> pathlib.Path:
  """Writes the run's best CTR-BERT (see the module docstring)."""
  cfg = run.task.model.config
  params = run.variables["params"]
  meta = {"format_version": FORMAT_VERSION, "share_plm": bool(cfg.share_plm),
          "hidden_size": cfg.plm.hidden_size, "mlp_hidden": cfg.mlp_hidden,
          "plm": {"model_type": cfg.plm.model_type,
                  "num_layers": cfg.plm.num_layers},
          "towers": {side: {"dir": d, "fields": [
              run.data.feature_map.field_names[f]
              for f in run.data.extra["fields"][side]]}
                     for side, d in _tower_dirs(cfg.share_plm).items()},
          "inputs": {f"{side}_{k}": "int [B, L] of the side's text"
                     for side in towers_lib.SIDES
                     for k in towers_lib.TOKEN_KEYS},
          "max_length": ctr_bert.tower_max_length(run.config),
          "source": source}
  with hf_export.staged_folder(out_dir, "ctr_bert") as tmp:
    save_file(_head_tensors(params), str(tmp / HEAD),
              metadata={"format": "pt"})
    for top in ctr_bert.plm_paths(cfg.share_plm):
      hf_export.export_hf(cfg.plm, jax.device_get(params[top]), tmp / top,
                          tokenizer=run.data.extra["tokenizer"])
    run.data.feature_map.save(str(tmp / "feature_map.json"))
    (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
  return out_dir


def compare(folder, run, batch) -> dict[str, float]:
  """max |p_torch - p_flax| of the export against the run's model."""
  cfg = dataclasses.replace(run.task.model.config, dtype=jnp.float32)
  logit = jax.jit(ctr_bert.CtrBertModel(cfg).apply)(
      dict(run.variables), {k: jnp.asarray(v) for k, v in batch.items()}
  )["logit"]
  twin = CtrBertTorch.from_pretrained(folder)
  with torch.no_grad():
    theirs = torch.sigmoid(twin(batch)["logit"]).numpy()
  ours = np.asarray(jax.nn.sigmoid(logit))
  return {"prob": float(np.max(np.abs(ours - theirs)))}
