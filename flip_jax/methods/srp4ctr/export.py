"""The final SRP4CTR CTR model to PyTorch, with a parity check.

Folder layout: ``srp4ctr.json`` (the frozen ``model.ModelConfig``),
``model.safetensors`` (the state dict of `torch_model.Srp4ctrTorch`) and
``source.json`` (the run it came from), written atomically. The
weight table is one list of (flax path, torch key, hook) rows used in both
directions (`flip_jax.export.ctr_mapping.to_torch` / ``to_flax``): the
backbone's rows come from the zoo's table under ``ctr``; DIN's attention
unit is a torch MLP (kernels transposed); everything else keeps its layout
(the torch key is the Flax path with dots).

  python -m experiments.export_torch --workdir=runs/srp_ml100k \
      --out=runs/srp_torch --check
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import re

import jax
import numpy as np
import torch
from safetensors.numpy import save_file

from flip_jax import jsonio
from flip_jax.export import ctr_mapping
from flip_jax.export import hf_export
from flip_jax.methods.srp4ctr import fgbert
from flip_jax.methods.srp4ctr import layers
from flip_jax.methods.srp4ctr import model as model_lib
from flip_jax.methods.srp4ctr import torch_model
from flip_jax.models import ctr as ctr_lib

CONFIG_FILE = "srp4ctr.json"
SOURCE_FILE = "source.json"
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


def write(run, out_dir, source) -> pathlib.Path:
  """The exporter contract (`flip_jax.methods.run_export`): the run's best
  model as ``model.safetensors`` + ``srp4ctr.json`` (+ ``source.json``)."""
  cfg = run.task.model.config
  sd = ctr_mapping.to_torch(export_rows(cfg, run.variables["params"]),
                            run.variables)
  with hf_export.staged_folder(out_dir, "srp4ctr") as tmp:
    save_file(dict(sd), str(tmp / WEIGHTS))
    jsonio.write_json_atomic(str(tmp / CONFIG_FILE), config_to_json(cfg))
    jsonio.write_json_atomic(str(tmp / SOURCE_FILE), source)
  return out_dir


def compare(folder, run, batch) -> dict[str, float]:
  """The exporter contract: max |p_torch - p_flax| on ``batch``."""
  return {"prob": max_prob_diff(run.task.model, run.variables, load(folder),
                                batch)}
