"""Export of a finetuned ClickPrompt model to PyTorch, with a parity check.

* ``ctr_only`` (no PLM) is the plain CTR model: it is written as a FLIP
  ``id``-mode export folder (``flip_jax.methods.flip.export``), loadable
  with ``flip_jax.export.ctr_torch.FlipCtrTorch.from_pretrained``: the
  backbone unchanged, ``ctr/head`` = ClickPrompt's ``ctr_head`` weight,
  ``ctr_bias`` = its bias and the backbone's first-order table zero (the
  ClickPrompt head has none), which is the same function.
* The PLM modes (``prefix_add`` ...) are one torch module
  (``torch_model.ClickPromptTorch``) in a folder:

    clickprompt.json               mode, K, pooler, prompt usage, α, the
                                   backbone's CTRConfig, the input contract
    clickprompt_model.safetensors  CTR backbone, generator, heads, α
    plm/                           Hugging Face folder of the finetuned PLM
    feature_map.json

``write`` / ``compare`` are the exporter contract of
`flip_jax.methods.run_export` (``export_run(workdir, out, check=True)``
compares p_torch with p_flax on test rows, float32).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import torch
from safetensors.numpy import save_file
from safetensors.torch import load_file

from flip_jax import tree_paths
from flip_jax.export import ctr_torch
from flip_jax.export import hf_export
from flip_jax.methods.clickprompt import model as model_lib
from flip_jax.methods.clickprompt import torch_model
from flip_jax.methods.flip import export as flip_export
from flip_jax.methods.flip import finetune_model as flip_model
from flip_jax.models import ctr as ctr_lib
from flip_jax.models.ctr.config import CTRConfig

log = logging.getLogger(__name__)

META = "clickprompt.json"
WEIGHTS = "clickprompt_model.safetensors"
PLM_DIR = "plm"


def as_plain_ctr(cp: model_lib.ClickPromptConfig, variables):
  """A ctr_only model as FLIP's id-mode model: (FinetuneConfig, variables).

  Raises:
    ValueError: a backbone whose zoo logit is not ``head(rep)`` (FM,
      DeepFM ...), which the id-mode twin cannot express.
  """
  if cp.mode != "ctr_only":
    raise ValueError(f"as_plain_ctr: mode {cp.mode!r} is not ctr_only")
  cls = ctr_lib.model_class(cp.ctr.name)
  if cls.rep_logit is not ctr_lib.CTRModel.rep_logit:
    raise ValueError(f"ctr_only export: backbone {cp.ctr.name!r} has no "
                     "plain head(rep) logit to hold ClickPrompt's head")
  p = jax.device_get(variables["params"])
  ctr = dict(p["ctr"])
  ctr["head"] = {"kernel": np.asarray(p["ctr_head"]["kernel"])}
  if cls.use_linear:
    ctr["linear"] = {"table": np.zeros((cp.ctr.num_features, 1), np.float32)}
  ft_cfg = flip_model.FinetuneConfig(mode="id", ctr=cp.ctr)
  params = {"ctr": ctr,
            "ctr_bias": np.asarray(p["ctr_head"]["bias"], np.float32)[0]}
  return ft_cfg, {"params": params}


def export_meta(cp: model_lib.ClickPromptConfig, source=None) -> dict:
  """``clickprompt.json`` of a PLM-mode model."""
  uses_q, _, kind, _, _ = model_lib.MODES[cp.mode]
  final = ctr_lib.rep_dim(cp.ctr) if uses_q else 0
  n_vec = (cp.num_prompt * 2 * cp.plm.num_layers if kind == "prefix"
           else cp.num_prompt)
  head_in = {"no": final, "avg": cp.plm.hidden_size,
             "cat": n_vec * cp.plm.hidden_size}[cp.prompt_usage]
  return {
      "format_version": 1, "mode": cp.mode, "num_prompt": cp.num_prompt,
      "prompt_usage": cp.prompt_usage, "pooler": cp.pooler,
      "weighted_add": cp.weighted_add, "alpha_learnable": cp.alpha_learnable,
      "alpha_init": cp.alpha_init, "shift_positions": cp.shift_positions,
      "final_dim": final, "ctr_head_in": head_in,
      "ctr_config": cp.ctr.to_dict() if uses_q else None,
      "plm": {"dir": PLM_DIR, "model_type": cp.plm.model_type},
      "inputs": {"ids": "int [B, F] global feature ids (feature_map.json)",
                 "input_ids": "int [B, L] token ids, right-padded",
                 "attention_mask": "int [B, L] 1 on tokens"},
      "source": source or {},
  }


def _zero_keys(meta, ctr_cfg) -> dict[str, tuple[int, ...]]:
  """Torch keys of the unused zoo head / linear table of the twin."""
  if ctr_cfg is None:
    return {}
  twin = {k: tuple(v.shape) for k, v in torch_model.build_torch(
      ctr_cfg).state_dict().items()}
  return {f"ctr.{k}": s for k, s in twin.items()
          if k in ("head.weight", "linear.weight")}


def export_model(cp, variables, out_dir, *, tokenizer=None, feature_map=None,
                 source=None) -> pathlib.Path:
  """Writes a finetuned model: ctr_only as FLIP's id export, else ours."""
  if cp.mode == "ctr_only":
    ft_cfg, plain = as_plain_ctr(cp, variables)
    return flip_export.export_model(ft_cfg, plain, out_dir,
                                    feature_map=feature_map, source=source)
  meta = export_meta(cp, source)
  flat = tree_paths.flatten({"params": jax.device_get(variables["params"])})
  tensors = torch_model.to_torch(meta, cp.ctr, flat, _zero_keys(meta, cp.ctr))
  with hf_export.staged_folder(out_dir, "clickprompt") as tmp:
    save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt"})
    hf_export.export_hf(cp.plm, jax.device_get(variables["params"]["plm"]),
                        tmp / PLM_DIR, tokenizer=tokenizer)
    if feature_map is not None:
      feature_map.save(str(tmp / "feature_map.json"))
    (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
  log.info("export: ClickPrompt %s (%d tensors + plm/) written to %s",
           cp.mode, len(tensors), out_dir)
  return out_dir


def load_torch(folder) -> torch_model.ClickPromptTorch:
  """``ClickPromptTorch`` of an export folder, in eval mode."""
  folder = pathlib.Path(folder)
  meta = json.loads((folder / META).read_text())
  ctr_cfg = CTRConfig(**meta["ctr_config"]) if meta["ctr_config"] else None
  plm = ctr_torch.load_hf_encoder(folder / PLM_DIR, add_pooling_layer=False)
  model = torch_model.ClickPromptTorch(meta, ctr_cfg, plm)
  info = model.load_state_dict(load_file(str(folder / WEIGHTS)), strict=False)
  missing = [k for k in info.missing_keys if not k.startswith("plm.")]
  if missing or info.unexpected_keys:
    raise ValueError(f"{folder / WEIGHTS}: missing {missing[:8]}, "
                     f"unexpected {info.unexpected_keys[:8]}")
  return model.eval()


def flax_probabilities(cp, variables, batch) -> dict[str, np.ndarray]:
  """σ of every logit of the model, computed in float32 without dropout."""
  ctr = cp.ctr and dataclasses.replace(cp.ctr, dtype="float32")
  cp32 = dataclasses.replace(cp, ctr=ctr, dtype=jnp.float32,
                             generator_dtype=jnp.float32)
  model = model_lib.ClickPromptModel(cp32)
  out = jax.jit(model.apply)(dict(variables),
                             {k: jnp.asarray(v) for k, v in batch.items()})
  return {k: np.asarray(jax.nn.sigmoid(v)) for k, v in out.items()
          if k.endswith("logit")}


def compare(folder, run, batch) -> dict[str, float]:
  """The exporter contract: max |p_torch - p_flax| per output ('prob',
  'ctr/prob' ...) of the export against the run's model."""
  cp, variables = run.task.model.config, run.variables
  ours = flax_probabilities(cp, variables, batch)
  if cp.mode == "ctr_only":
    twin = ctr_torch.FlipCtrTorch.from_pretrained(folder)
  else:
    twin = load_torch(folder)
  with torch.no_grad():
    theirs = {k: torch.sigmoid(v).numpy() for k, v in twin(batch).items()
              if k.endswith("logit")}
  diffs = {k.replace("logit", "prob"): float(np.max(np.abs(v - theirs[k])))
           for k, v in ours.items() if k in theirs}
  return diffs


def write(run, out_dir, source) -> pathlib.Path:
  """The exporter contract: a finished ClickPrompt finetuning run."""
  return export_model(run.task.model.config, run.variables, out_dir,
                      tokenizer=run.data.extra.get("tokenizer"),
                      feature_map=run.data.feature_map, source=source)
