"""The final SRP4CTR CTR model to PyTorch, with a parity check.

Folder layout: ``srp4ctr.json`` (the frozen ``model.ModelConfig``) and
``model.safetensors`` (the state dict of `torch_model.Srp4ctrTorch`). The
weight table is one list of (flax path, torch key, hook) rows used in both
directions (`flip_jax.export.ctr_mapping.to_torch` / ``to_flax``): the
backbone's rows come from the zoo's table under ``ctr``; DIN's attention
unit is a torch MLP (kernels transposed); everything else keeps its layout
(the torch key is the Flax path with dots).

  python -c "from flip_jax.methods.srp4ctr import export; \
    print(export.export_srp4ctr('runs/srp_ml100k', 'runs/srp_torch'))"
"""
from __future__ import annotations

import dataclasses
import os
import re

import jax
import ml_collections as mlc
import numpy as np
import torch

from flip_jax import checkpoint
from flip_jax import jsonio
from flip_jax.data import sequences
from flip_jax.export import ctr_mapping
from flip_jax.methods.srp4ctr import data as data_lib
from flip_jax.methods.srp4ctr import fgbert
from flip_jax.methods.srp4ctr import finetune
from flip_jax.methods.srp4ctr import layers
from flip_jax.methods.srp4ctr import model as model_lib
from flip_jax.methods.srp4ctr import torch_model
from flip_jax.models import ctr as ctr_lib
from flip_jax.train import finished

CONFIG_FILE = "srp4ctr.json"
WEIGHTS = "model.safetensors"
FORMAT_VERSION = 1
_DIN_DENSE = re.compile(r"^params/din/att/dense_(\d+)/(kernel|bias)$")


def export_rows(cfg: model_lib.ModelConfig, params) -> list:
  """(flax path, torch key, hook) rows of a model's params."""
  hooks = ctr_mapping.HOOKS
  rows = [(f"{f.split('/', 1)[0]}/ctr/{f.split('/', 1)[1]}", f"ctr.{t}", h)
          for f, t, h in ctr_mapping.backbone_rows(cfg.ctr)]
  for path in ctr_mapping.flatten({"params": params}):
    if path.startswith("params/ctr/"):
      continue
    m = _DIN_DENSE.match(path)
    if m:
      t = f"din.att.linears.{m.group(1)}.{'weight' if m.group(2) == 'kernel' else 'bias'}"
      rows.append((path, t, hooks["transpose" if m.group(2) == "kernel"
                                 else "identity"]))
    elif path.startswith("params/din/att_out/"):
      kernel = path.endswith("kernel")
      rows.append((path, "din.att_out." + ("weight" if kernel else "bias"),
                   hooks["transpose" if kernel else "identity"]))
    else:
      rows.append((path, path[len("params/"):].replace("/", "."),
                   hooks["identity"]))
  return rows


def config_to_json(cfg: model_lib.ModelConfig) -> dict:
  return {"format_version": FORMAT_VERSION, **dataclasses.asdict(cfg)}


def config_from_json(d: dict) -> model_lib.ModelConfig:
  if d.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{CONFIG_FILE}: format_version "
                     f"{d.get('format_version')!r} != {FORMAT_VERSION}")
  seq = d["seq"]
  if seq is not None:
    seq = fgbert.SeqConfig(**{**seq, "block": layers.BlockConfig(
        **seq["block"])})
  rest = {k: v for k, v in d.items()
          if k not in ("format_version", "ctr", "seq")}
  return model_lib.ModelConfig(ctr=ctr_lib.CTRConfig(**d["ctr"]), seq=seq,
                               **rest)


def to_torch_model(cfg, variables) -> torch_model.Srp4ctrTorch:
  """The torch twin with the Flax variables' weights."""
  rows = export_rows(cfg, variables["params"])
  sd = ctr_mapping.to_torch(rows, variables)
  model = torch_model.Srp4ctrTorch(cfg)
  model.load_state_dict({k: torch.from_numpy(np.array(v))
                         for k, v in sd.items()}, strict=True)
  return model.eval()


def load(path: str) -> torch_model.Srp4ctrTorch:
  """An export folder -> the torch model (eval mode)."""
  from safetensors.torch import load_file  # pylint: disable=g-import-not-at-top
  cfg = config_from_json(jsonio.read_json(os.path.join(path, CONFIG_FILE)))
  model = torch_model.Srp4ctrTorch(cfg)
  model.load_state_dict(load_file(os.path.join(path, WEIGHTS)), strict=True)
  return model.eval()


def max_prob_diff(model, variables, torch_model_, batch) -> float:
  """max |sigmoid(flax logit) - sigmoid(torch logit)| on a batch."""
  flax_logit = jax.jit(model.apply)(variables, batch)["logit"]
  with torch.no_grad():
    t_logit = torch_model_({k: torch.from_numpy(np.asarray(v))
                            for k, v in batch.items()}).numpy()
  p = 1 / (1 + np.exp(-np.asarray(flax_logit, np.float64)))
  q = 1 / (1 + np.exp(-t_logit.astype(np.float64)))
  return float(np.max(np.abs(p - q)))


def export_srp4ctr(workdir: str, out: str, *, check: bool = True,
                   num_check: int = 256) -> float:
  """Exports a finished SRP4CTR CTR run's best model; returns the parity.

  Returns:
    max |p_torch - p_flax| over the first ``num_check`` test rows (0.0
    without ``check``); raises if it exceeds 1e-5.
  """
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  cfg = finetune.run_config(
      mlc.ConfigDict(finished.require(workdir, flag=None)), workdir)
  prepared, store = data_lib.load_store(cfg, workdir)
  finished.check_feature_map(workdir, prepared.feature_map)
  model = finetune.build_model(cfg, store, prepared.feature_map)
  best = os.path.join(workdir, "best")
  ckpt = checkpoint.Checkpointer(best, max_to_keep=1, save_interval_steps=1,
                                 async_save=False)
  step = ckpt.latest_step()
  ckpt.close()
  if step is None:
    raise FileNotFoundError(f"{best}: no best checkpoint (run unfinished?)")
  variables = checkpoint.restore_variables(best, step=step)
  rows = export_rows(model.config, variables["params"])
  sd = ctr_mapping.to_torch(rows, variables)
  os.makedirs(out, exist_ok=True)
  save_file(dict(sd), os.path.join(out, WEIGHTS))
  jsonio.write_json_atomic(os.path.join(out, CONFIG_FILE),
                           config_to_json(model.config))
  if not check:
    return 0.0
  cols = data_lib.ctr_columns(prepared, store, "test")
  n = min(num_check, len(cols["label"]))
  hist, mask = sequences.gather_windows(store.tokens, cols["hist_begin"][:n],
                                        cols["hist_end"][:n],
                                        cfg.sequence.max_length)
  batch = {"ids": np.asarray(cols["ids"][:n], np.int32),
           "target": np.asarray(cols["target"][:n], np.int32),
           "hist": hist, "hist_mask": mask}
  diff = max_prob_diff(model, variables, load(out), batch)
  if diff > 1e-5:
    raise ValueError(f"export parity: max |p_torch - p_flax| = {diff:.2e}")
  return diff
