"""Export of a finetuned FLIP CTR model (id / plm / joint) to PyTorch.

Folder layout written by `export_model` / `export_finetuned`:

  flip_ctr.json          mode, α parametrisation and value, backbone name,
                         every CTRConfig field, a feature-map summary, the
                         PLM summary, the input contract and the source run
  ctr_model.safetensors  ID backbone + heads (ctr.*, ctr_bias, txt_head.*,
                         alpha, out_bias), keys of `ctr_mapping.finetune_rows`
  feature_map.json       the run's full feature map (raw value -> global id)
  plm/                   Hugging Face folder of the finetuned PLM (modes plm
                         and joint), written by `hf_export.export_hf`
  flip_jax_export.json   the export marker (`hf_export.EXPORT_MARKER`)

`flip_jax.export.ctr_torch.FlipCtrTorch.from_pretrained(folder)` rebuilds the
model in PyTorch; `load_export(folder)` imports it back into Flax (bit-identical
variables). Variables are ``{'params': ...}`` plus ``batch_stats`` for a
BatchNorm backbone (written as the torch modules' running statistics). The
folder is written atomically (a temporary sibling that is renamed at the end;
an existing folder is replaced).

    p_max_diff = export_finetuned("runs/ft_joint", "runs/ft_joint_torch",
                                  check=True)
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import pathlib
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import torch
from safetensors.numpy import load_file
from safetensors.numpy import save_file

from flip_jax.export import ctr_mapping
from flip_jax.export import ctr_torch
from flip_jax.export import hf_export
from flip_jax.methods import run_export
from flip_jax.methods.flip import finetune_model as ft_lib
from flip_jax.models import plm as plm_lib
from flip_jax.models.ctr.config import CTRConfig

log = logging.getLogger(__name__)

def _fm_summary(feature_map) -> dict[str, Any] | None:
  if feature_map is None:
    return None
  return {
      "num_features": int(feature_map.num_features),
      "num_fields": int(feature_map.num_fields),
      "fields": [{"name": n, "display_name": d, "vocab_size": int(s),
                  "offset": int(o)}
                 for n, d, s, o in zip(feature_map.field_names,
                                       feature_map.display_names,
                                       feature_map.vocab_sizes,
                                       feature_map.offsets)],
      "file": "feature_map.json",
  }


def export_config(ft_cfg, params, *, feature_map=None, max_length=None,
                  source=None) -> dict[str, Any]:
  """The ``flip_ctr.json`` content of a finetuned model.

  Args:
    ft_cfg: the model's `FinetuneConfig`.
    params: its params (for the learned α).
    feature_map: the run's `FeatureMap`, or None.
    max_length: the text length L the run used, or None.
    source: free-form provenance (workdir, best step...).

  Returns:
    A JSON-serialisable dict.
  """
  mode = ft_cfg.mode
  alpha = None
  if mode == "joint":
    raw = float(np.asarray(params["alpha"]))
    alpha = (1.0 / (1.0 + math.exp(-raw)) if ft_cfg.alpha_param == "sigmoid"
             else raw)
  plm = None
  if mode != "id":
    p = ft_cfg.plm
    plm = {"dir": ctr_torch.PLM_DIR, "model_type": p.model_type,
           "hidden_size": p.hidden_size, "num_layers": p.num_layers,
           "max_length": max_length}
  inputs = {}
  if mode != "plm":
    inputs["ids"] = "int [B, F] global feature ids (see feature_map.json)"
  if mode != "id":
    inputs["input_ids"] = "int [B, L] token ids, right-padded"
    inputs["attention_mask"] = "int [B, L], 1 on tokens, 0 on padding"
  return {
      "format_version": ctr_torch.FORMAT_VERSION,
      "mode": mode,
      "alpha_param": ft_cfg.alpha_param,
      "alpha": alpha,
      "backbone": ft_cfg.ctr.name if ft_cfg.ctr is not None else None,
      "ctr_config": ft_cfg.ctr.to_dict() if ft_cfg.ctr is not None else None,
      "feature_map": _fm_summary(feature_map),
      "plm": plm,
      "inputs": inputs,
      "logit": {"id": "z_ID + b_ID", "plm": "z_PLM + b_PLM",
                "joint": "a*(z_ID + b_ID) + (1 - a)*(z_PLM + b_PLM) + b_out"
                }[mode],
      "source": source or {},
  }


def export_model(ft_cfg, variables: Mapping[str, Any], out_dir, *,
                 tokenizer=None, feature_map=None, max_length=None,
                 source=None) -> pathlib.Path:
  """Writes a finetuned model (Flax variables) as a PyTorch export folder.

  Args:
    ft_cfg: the `FinetuneConfig` of `FlipCtrModel`.
    variables: ``{'params': ..., ['batch_stats': ...]}`` (nested dicts;
      numpy, jax or boxed leaves).
    out_dir: destination folder: new, empty or an earlier export (replaced
      atomically); anything else raises ExportDestinationError first.
    tokenizer: the PLM's HF tokenizer, saved into ``plm/`` when given.
    feature_map: the run's `FeatureMap` (summary + feature_map.json).
    max_length: text length L of the run (recorded).
    source: provenance dict recorded in flip_ctr.json.

  Returns:
    The folder written.

  Raises:
    KeyError: variables that do not match the model's mapping rows.
    hf_export.ExportDestinationError: `out_dir` may not be replaced.
  """
  out_dir = run_export.check_destination(out_dir)
  mode = ft_cfg.mode
  params = _params_of(variables)
  rows = ctr_mapping.finetune_rows(mode, ft_cfg.ctr)
  tensors = ctr_mapping.to_torch(rows, variables, ignore=r"^params/plm/")
  meta = export_config(ft_cfg, params, feature_map=feature_map,
                       max_length=max_length, source=source)
  with hf_export.staged_folder(out_dir, "flip_ctr",
                               legacy=ctr_torch.is_legacy_export) as tmp:
    save_file(tensors, str(tmp / ctr_torch.CTR_WEIGHTS),
              metadata={"format": "pt"})
    if mode != "id":
      hf_export.export_hf(ft_cfg.plm, params["plm"], tmp / ctr_torch.PLM_DIR,
                          tokenizer=tokenizer)
    if feature_map is not None:
      feature_map.save(str(tmp / "feature_map.json"))
    (tmp / ctr_torch.EXPORT_CONFIG).write_text(
        json.dumps(meta, indent=2) + "\n")
  log.info("export: %s model (%d ID/head tensors%s) written to %s", mode,
           len(tensors), ", PLM in plm/" if mode != "id" else "", out_dir)
  return out_dir


def _params_of(variables: Mapping[str, Any]) -> Mapping[str, Any]:
  if "params" not in variables:
    raise KeyError("expected a variables dict {'params': ..., "
                   "['batch_stats': ...]}, got keys "
                   f"{sorted(variables)[:6]}")
  return variables["params"]


def load_export(folder) -> tuple[Any, dict[str, Any]]:
  """Imports an export folder back into Flax (the inverse of `export_model`).

  Args:
    folder: a folder written by `export_model` / `export_finetuned`.

  Returns:
    (FinetuneConfig, variables) for `FlipCtrModel`; numpy leaves equal bit
    for bit to the exported ones (the PLM via the HF import table).
  """
  folder = pathlib.Path(folder)
  meta = ctr_torch.read_export_config(folder)
  mode = meta["mode"]
  ctr_cfg = (CTRConfig(**meta["ctr_config"]) if mode != "plm"
             else None)
  variables = ctr_mapping.to_flax(
      ctr_mapping.finetune_rows(mode, ctr_cfg),
      load_file(str(folder / ctr_torch.CTR_WEIGHTS)))
  plm_cfg = None
  if mode != "id":
    module, variables["params"]["plm"], _ = plm_lib.load_pretrained(
        str(folder / ctr_torch.PLM_DIR))
    plm_cfg = module.config
  ft_cfg = ft_lib.FinetuneConfig(mode=mode, ctr=ctr_cfg, plm=plm_cfg,
                                 alpha_param=meta["alpha_param"])
  return ft_cfg, variables


def float32_config(ft_cfg):
  """The same model computing in float32 (the parity reference)."""
  ctr = ft_cfg.ctr
  if ctr is not None and ctr.dtype != "float32":
    ctr = dataclasses.replace(ctr, dtype="float32")
  return dataclasses.replace(ft_cfg, ctr=ctr, dtype=jnp.float32)


def flax_probabilities(ft_cfg, variables, batch) -> dict[str, np.ndarray]:
  """σ of every logit of `FlipCtrModel` in float32, no dropout."""
  model = ft_lib.FlipCtrModel(float32_config(ft_cfg))
  keys = [k for k in ("ids", "input_ids", "attention_mask") if k in batch]
  _params_of(variables)  # a clear error for a params-only tree
  out = jax.jit(model.apply)(dict(variables),
                             {k: jnp.asarray(batch[k]) for k in keys})
  return {k: np.asarray(jax.nn.sigmoid(v)) for k, v in out.items()
          if k.endswith("logit")}


def compare_export(folder, ft_cfg, variables, batch) -> dict[str, float]:
  """Max |σ(logit)| differences between the export (torch) and Flax.

  Args:
    folder: an export folder.
    ft_cfg: the exported model's `FinetuneConfig`.
    variables: the exported variables.
    batch: numpy inputs ('ids', 'input_ids', 'attention_mask' as the mode
      needs).

  Returns:
    {'prob': ..., 'ctr/prob' / 'txt/prob' where present}.
  """
  ours = flax_probabilities(ft_cfg, variables, batch)
  model = ctr_torch.FlipCtrTorch.from_pretrained(folder)
  with torch.no_grad():
    theirs = {k: torch.sigmoid(v).numpy() for k, v in model(batch).items()
              if k.endswith("logit")}
  diffs = {}
  for k, v in ours.items():
    name = k.replace("logit", "prob")
    diffs[name] = float(np.max(np.abs(v - theirs[k])))
  return diffs


def write(run, out_dir, source) -> pathlib.Path:
  """The exporter contract (`flip_jax.methods.run_export`): a finished
  FLIP finetuning run (id / plm / joint) as an export folder."""
  ft_cfg = run.task.model.config
  return export_model(ft_cfg, run.variables, out_dir,
                      tokenizer=run.data.extra.get("tokenizer"),
                      feature_map=run.data.feature_map,
                      max_length=(run.config.data.max_length
                                  if ft_cfg.mode != "id" else None),
                      source=source)


def compare(folder, run, batch) -> dict[str, float]:
  """The exporter contract: max |p_torch - p_flax| per output."""
  return compare_export(folder, run.task.model.config, run.variables, batch)
