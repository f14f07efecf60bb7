"""PyTorch twin of the finetuned FLIP CTR model, and its export folder.

`FlipCtrTorch` is the finetuned model of `flip_jax.methods.flip.finetune_model`
(modes id / plm / joint): the ID backbone (`flip_jax.export.torch_backbones`),
a Hugging Face `AutoModel` as the PLM (sentence vector = first token of the
last layer), `txt_head`, α and the biases, with the joint logit (FLIP.md 6.3)

    s = α·(z_ID + b_ID) + (1 − α)·(z_PLM + b_PLM) + b_out.

`FlipCtrTorch.from_pretrained(dir)` loads a folder written by
`flip_jax.methods.flip.export.export_model`. The id-mode folder is also the
export format of the ID model from scratch (`flip_jax.methods.ctr_export`)
and of ClickPrompt's ``ctr_only`` mode, so the twin lives here, beside the
shared backbones, and not in `flip_jax.methods.flip` with FLIP's exporter.
"""
from __future__ import annotations

import pathlib
from typing import Any, Mapping

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from flip_jax import jsonio
from flip_jax.export import ctr_mapping
from flip_jax.export.torch_backbones import build_torch
from flip_jax.models.ctr.config import CTRConfig

EXPORT_CONFIG = "flip_ctr.json"
CTR_WEIGHTS = "ctr_model.safetensors"
PLM_DIR = "plm"
FORMAT_VERSION = 1


class FlipCtrTorch(nn.Module):
  """The finetuned FLIP CTR model (mode id / plm / joint) in PyTorch.

  Attributes:
    mode: 'id', 'plm' or 'joint'.
    alpha_param: 'raw' (α used as is) or 'sigmoid' (α = sigmoid(alpha)).
    ctr: the ID backbone (id, joint); ctr_bias its output bias b_ID.
    plm: a transformers model (plm, joint); txt_head Linear(H, 1).
    alpha, out_bias: the mixing scalar and b_out (joint).
  """

  def __init__(self, mode: str, ctr_cfg=None, plm: nn.Module | None = None, *,
               alpha_param: str = "raw"):
    super().__init__()
    if mode not in ("id", "plm", "joint"):
      raise ValueError(f"FlipCtrTorch: mode {mode!r} not in id|plm|joint")
    if alpha_param not in ("raw", "sigmoid"):
      raise ValueError(f"FlipCtrTorch: alpha_param {alpha_param!r} not in "
                       "raw|sigmoid")
    self.mode, self.alpha_param = mode, alpha_param
    if mode != "plm":
      if ctr_cfg is None:
        raise ValueError(f"FlipCtrTorch: mode {mode!r} needs a CTRConfig")
      self.ctr = build_torch(ctr_cfg)
      self.ctr_bias = nn.Parameter(torch.zeros(()))
    if mode != "id":
      if plm is None:
        raise ValueError(f"FlipCtrTorch: mode {mode!r} needs a PLM module")
      self.plm = plm
      self.txt_head = nn.Linear(plm.config.hidden_size, 1)
    if mode == "joint":
      self.alpha = nn.Parameter(torch.zeros(()))
      self.out_bias = nn.Parameter(torch.zeros(()))

  def mixing_weight(self) -> torch.Tensor:
    """α as used in the joint logit."""
    if self.alpha_param == "sigmoid":
      return torch.sigmoid(self.alpha)
    return self.alpha

  def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Logits of a batch.

    Args:
      batch: 'ids' [B, F] (id, joint) and 'input_ids', 'attention_mask'
        [B, L] (plm, joint); numpy arrays or tensors.

    Returns:
      {'logit', and 'ctr/logit' / 'txt/logit' / 'alpha' where they apply}.
    """
    dev = next(self.parameters()).device

    def get(key):
      if key not in batch:
        raise KeyError(f"FlipCtrTorch(mode={self.mode!r}): batch lacks "
                       f"{key!r} (has {sorted(batch)})")
      x = batch[key]
      if not isinstance(x, torch.Tensor):     # numpy, memmap, lists: copy
        x = torch.from_numpy(np.array(x))
      return x.to(dev).long()

    out = {}
    if self.mode != "plm":
      out["ctr/logit"] = self.ctr(get("ids"))["ctr/logit"] + self.ctr_bias
    if self.mode != "id":
      hidden = self.plm(input_ids=get("input_ids"),
                        attention_mask=get("attention_mask")).last_hidden_state
      out["txt/logit"] = self.txt_head(hidden[:, 0])[:, 0]
    if self.mode == "joint":
      a = self.mixing_weight()
      out["logit"] = (a * out["ctr/logit"] + (1.0 - a) * out["txt/logit"]
                      + self.out_bias)
      out["alpha"] = a
    else:
      out["logit"] = out["ctr/logit" if self.mode == "id" else "txt/logit"]
    return out

  @torch.no_grad()
  def predict_proba(self, batch: Mapping[str, Any]) -> torch.Tensor:
    """ŷ = sigmoid(logit) [B] (no gradients; call `.eval()` first)."""
    return torch.sigmoid(self(batch)["logit"])

  @classmethod
  def from_pretrained(cls, path, *, attn_implementation: str = "eager",
                      device: str = "cpu") -> "FlipCtrTorch":
    """Loads an `export_finetuned` folder; returns the model in eval mode.

    Args:
      path: the export folder (flip_ctr.json, ctr_model.safetensors, plm/).
      attn_implementation: transformers attention kernel of the PLM.
      device: torch device to load onto.

    Raises:
      FileNotFoundError / ValueError: a missing or inconsistent export.
    """
    path = pathlib.Path(path)
    meta = read_export_config(path)
    mode = meta["mode"]
    ctr_cfg = plm = None
    if mode != "plm":
      try:
        ctr_cfg = CTRConfig(**meta["ctr_config"])
      except TypeError as e:
        raise ValueError(f"{path / EXPORT_CONFIG}: bad ctr_config ({e})"
                         ) from e
    if mode != "id":
      plm = load_hf_encoder(path / PLM_DIR,
                            attn_implementation=attn_implementation)
    model = cls(mode, ctr_cfg, plm, alpha_param=meta["alpha_param"])
    sd = load_file(str(path / CTR_WEIGHTS))
    rows = ctr_mapping.finetune_rows(mode, ctr_cfg)
    ctr_mapping.to_flax(rows, sd)     # strict key check with a clear error
    info = model.load_state_dict(sd, strict=False)
    missing = [k for k in info.missing_keys if not k.startswith("plm.")]
    if missing or info.unexpected_keys:
      raise ValueError(f"{path / CTR_WEIGHTS}: missing {missing[:8]}, "
                       f"unexpected {info.unexpected_keys[:8]}")
    return model.to(device).eval()


def load_hf_encoder(folder, *, attn_implementation: str = "eager",
                    **kwargs):
  """`transformers.AutoModel` of an exported PLM folder, quietly.

  The folder also holds the MLM head (hf_export always writes it), which
  AutoModel does not use: only missing weights are an error.
  """
  import transformers  # pylint: disable=g-import-not-at-top
  hf_log = transformers.logging
  verbosity, bars = hf_log.get_verbosity(), hf_log.is_progress_bar_enabled()
  hf_log.set_verbosity_error()
  hf_log.disable_progress_bar()
  try:
    plm, info = transformers.AutoModel.from_pretrained(
        str(folder), attn_implementation=attn_implementation,
        output_loading_info=True, **kwargs)
  finally:
    hf_log.set_verbosity(verbosity)
    if bars:
      hf_log.enable_progress_bar()
  if info["missing_keys"]:
    raise ValueError(f"{folder}: PLM weights missing "
                     f"{sorted(info['missing_keys'])[:8]}")
  return plm.eval()


# Everything an export folder written before the marker existed could hold
# (check.json: run_all's parity record).
_LEGACY_ENTRIES = frozenset({EXPORT_CONFIG, CTR_WEIGHTS, "feature_map.json",
                             PLM_DIR, "check.json"})


def is_legacy_export(folder) -> bool:
  """A finetuned export without marker: flip_ctr.json and only export files."""
  folder = pathlib.Path(folder)
  names = {p.name for p in folder.iterdir()}
  return EXPORT_CONFIG in names and names <= _LEGACY_ENTRIES


def read_export_config(path) -> dict[str, Any]:
  """Reads and checks ``flip_ctr.json`` of an export folder."""
  path = pathlib.Path(path)
  cfg_path = path / EXPORT_CONFIG
  if not cfg_path.exists():
    raise FileNotFoundError(f"{path}: no {EXPORT_CONFIG} (not an "
                            "export_finetuned folder?)")
  meta = jsonio.read_json(cfg_path)  # bad JSON: a ValueError naming it
  if meta.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{cfg_path}: format_version "
                     f"{meta.get('format_version')!r} != {FORMAT_VERSION}")
  for key in ("mode", "alpha_param", "ctr_config"):
    if key not in meta:
      raise ValueError(f"{cfg_path}: missing field {key!r}")
  if meta["mode"] != "plm" and not meta["ctr_config"]:
    raise ValueError(f"{cfg_path}: mode {meta['mode']!r} needs 'ctr_config'")
  for need in ([CTR_WEIGHTS] + ([f"{PLM_DIR}/config.json"]
                                if meta["mode"] != "id" else [])):
    if not (path / need).exists():
      raise FileNotFoundError(f"{path}: missing {need}")
  return meta
