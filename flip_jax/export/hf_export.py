"""Export of our PLM params to an HF checkpoint folder (PyTorch-loadable).

The folder holds config.json + model.safetensors (+ tokenizer files) and
loads with `transformers.AutoModel` and `AutoModelForMaskedLM` with no missing
weights:

* Encoder keys carry the base prefix (`bert.` / `roberta.`), the layout HF
  itself writes for `*ForMaskedLM`; HF strips it for `AutoModel`.
* The MLM head is always written. Without `mlm_head_params` a fresh head is
  written (seed `HEAD_INIT_SEED`, same init as our `MLMHead`) and logged, so
  masked-LM loading is clean; its predictions are meaningless until trained.
* The pooler (unused by FLIP, which takes the first token state) is written
  from `pooler` when given (e.g. the tensors of the imported checkpoint),
  otherwise freshly initialised (Normal(0, initializer_range), zero bias).
* Floating tensors are stored as float32 (bf16 params are upcast exactly).

The write is atomic: everything goes to a temporary sibling folder that is
renamed onto `out_dir` at the end; an existing `out_dir` is replaced.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil
import tempfile
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from flip_jax import tree_paths
from flip_jax.export import torch_mapping as tm
from flip_jax.models.plm import hf_names
from flip_jax.models.plm.config import PLMConfig
from flip_jax.models.plm.heads import MLMHead
from flip_jax.models.plm.hf_import import HEAD_INIT_SEED

log = logging.getLogger(__name__)


def _flat_numpy(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Boxed/sharded/bf16 param tree -> flat '/' dict of float32 numpy."""
  params = jax.device_get(nn.meta.unbox(params))
  flat = tree_paths.flatten(dict(params))
  out = {}
  for k, v in flat.items():
    v = np.asarray(v)
    if np.issubdtype(v.dtype, np.floating) or v.dtype.name == "bfloat16":
      v = v.astype(np.float32)
    out[k] = v
  return out


def fresh_head_params(config: PLMConfig) -> dict[str, Any]:
  """The MLM head our importer would create for a checkpoint without one."""
  variables = MLMHead(config).init(
      jax.random.key(HEAD_INIT_SEED), jnp.zeros((1, config.hidden_size)),
      jnp.zeros((config.vocab_size, config.hidden_size)))
  return nn.meta.unbox(variables["params"])


def fresh_pooler(config: PLMConfig) -> dict[str, np.ndarray]:
  """An HF-style freshly initialised pooler (unused by FLIP)."""
  rng = np.random.default_rng(HEAD_INIT_SEED)
  h = config.hidden_size
  return {
      "pooler.dense.weight": rng.normal(
          0.0, config.initializer_range, (h, h)).astype(np.float32),
      "pooler.dense.bias": np.zeros((h,), np.float32),
  }


def to_hf_tensors(config: PLMConfig, params, *, mlm_head_params=None,
                  pooler: Mapping[str, np.ndarray] | None = None
                  ) -> dict[str, np.ndarray]:
  """Builds the full HF state dict (encoder, pooler, MLM head).

  Args:
    config: the encoder config (its num_layers must match params).
    params: PLMEncoder params (plain or boxed, any device/sharding).
    mlm_head_params: MLMHead params, or None for a fresh head.
    pooler: {'pooler.dense.weight', 'pooler.dense.bias'} or None (fresh).

  Returns:
    {HF key: float32 numpy array}.
  """
  prefix = hf_names.BASE_PREFIX[config.model_type]
  out = tm.flax_to_torch(config, _flat_numpy(params),
                         hf_names.encoder_rows(config), prefix)
  if pooler is None:
    pooler = fresh_pooler(config)
  for key in hf_names.POOLER_KEYS:
    out[prefix + key] = np.ascontiguousarray(pooler[key], np.float32)
  if mlm_head_params is None:
    log.info("export: no MLM head given; writing a freshly initialised one"
             " (seed %d)", HEAD_INIT_SEED)
    mlm_head_params = fresh_head_params(config)
  out.update(tm.flax_to_torch(config, _flat_numpy(mlm_head_params),
                              hf_names.head_rows(config)))
  return out


def replace_dir(tmp: pathlib.Path, out_dir: pathlib.Path) -> None:
  """Moves a finished temp folder into place (an existing one is replaced)."""
  old = None
  if out_dir.exists():
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    os.replace(out_dir, old)
  os.replace(tmp, out_dir)
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


def export_hf(config: PLMConfig, params, out_dir, *, tokenizer=None,
              mlm_head_params=None, pooler=None) -> pathlib.Path:
  """Writes an HF checkpoint folder for our encoder (+ MLM head).

  Args:
    config: encoder config.
    params: PLMEncoder params.
    out_dir: destination folder (replaced atomically if it exists).
    tokenizer: optional HF tokenizer, saved with `save_pretrained`.
    mlm_head_params: optional MLMHead params; a fresh head is written if None.
    pooler: optional HF pooler tensors to keep; fresh if None.

  Returns:
    The destination path.
  """
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  out_dir = pathlib.Path(out_dir).expanduser().resolve()
  tensors = to_hf_tensors(config, params, mlm_head_params=mlm_head_params,
                          pooler=pooler)
  out_dir.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-",
                                      dir=out_dir.parent))
  try:
    save_file(tensors, str(tmp / "model.safetensors"),
              metadata={"format": "pt"})
    hf_cfg = dict(config.to_hf_dict(), dtype="float32")
    (tmp / "config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n")
    if tokenizer is not None:
      tokenizer.save_pretrained(str(tmp))
    os.chmod(tmp, 0o755)
    replace_dir(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  log.info("export: wrote %d tensors to %s", len(tensors), out_dir)
  return out_dir
