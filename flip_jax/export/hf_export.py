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
renamed onto `out_dir` at the end. Every export holds `EXPORT_MARKER`
(`flip_jax_export.json`), which lists the files the export wrote; an
existing `out_dir` is replaced only when it is an empty folder or an earlier
export holding nothing else (a workflow's ``check.json`` aside). Anything
else (a file, a folder of other files, an earlier export to which files were
added, a protected folder such as the run's own workdir) is refused with
`ExportDestinationError` naming what is in the way, before any work
(`check_destination`), so an export never deletes what it did not write.
"""
from __future__ import annotations

import contextlib
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


# Written into every export folder, with the list of the files the export
# wrote (`files`); `replace_dir` replaces only folders that hold it (or empty
# ones), and only while they hold nothing else.
EXPORT_MARKER = "flip_jax_export.json"
_MARKER_FORMAT = "flip_jax_export"
_MARKER_VERSION = 2
# Written next to an export by the workflows (its parity record).
_RECORDS = frozenset({"check.json"})
# What exports wrote before the marker listed its files (version 1): HF
# model and tokenizer files, the finetuned exports' files, and `plm/`.
_HF_NAMES = frozenset({
    "config.json", "model.safetensors", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
    "vocab.json", "merges.txt", "added_tokens.json", "spiece.model",
    "sentencepiece.bpe.model", EXPORT_MARKER})
_V1_NAMES = _HF_NAMES | _RECORDS | {
    "flip_ctr.json", "ctr_model.safetensors", "feature_map.json",
    "clickprompt.json", "clickprompt_model.safetensors"}
_V1_PLM_DIR = "plm"


class ExportDestinationError(ValueError):
  """An export destination that must not be replaced; names the path."""


def _files_under(folder: pathlib.Path) -> list[str]:
  return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                if not p.is_dir() or p.is_symlink())


def write_marker(folder: pathlib.Path, kind: str) -> None:
  """Marks `folder` as a flip_jax export of `kind` (see EXPORT_MARKER),
  listing every file already in it: call it once the export is written."""
  folder = pathlib.Path(folder)
  (folder / EXPORT_MARKER).write_text(json.dumps(
      {"format": _MARKER_FORMAT, "kind": kind, "version": _MARKER_VERSION,
       "files": [f for f in _files_under(folder) if f != EXPORT_MARKER]},
      indent=2) + "\n")


def _read_marker(folder) -> dict | None:
  marker = pathlib.Path(folder) / EXPORT_MARKER
  if not marker.is_file():
    return None
  try:
    data = json.loads(marker.read_text())
  except (OSError, ValueError):
    return None
  if not isinstance(data, dict) or data.get("format") != _MARKER_FORMAT:
    return None
  return data


def is_export(folder) -> bool:
  """True when `folder` holds a flip_jax export marker."""
  return _read_marker(folder) is not None


def foreign_entries(folder) -> list[str]:
  """Entries of an earlier export that the export did not write (a user's
  notes, a folder of results), relative to `folder`; a folder is named once.

  The marker's file list says what the export wrote; a marker written
  before the list existed is matched by the names exports used then.
  """
  folder = pathlib.Path(folder)
  marker = _read_marker(folder) or {}
  files = marker.get("files")
  if not isinstance(files, list):
    return _foreign_v1(folder)
  owned = set(files) | {EXPORT_MARKER} | _RECORDS
  dirs = {str(parent) for f in owned for parent in pathlib.PurePath(f).parents}
  out = []
  for path in sorted(folder.rglob("*")):
    rel = str(path.relative_to(folder))
    if any(rel.startswith(f + os.sep) for f in out):
      continue  # inside a foreign folder already named
    is_dir = path.is_dir() and not path.is_symlink()
    if (rel not in dirs) if is_dir else (rel not in owned):
      out.append(rel)
  return out


def _foreign_v1(folder: pathlib.Path) -> list[str]:
  out = []
  for path in sorted(folder.iterdir()):
    if path.name == _V1_PLM_DIR and path.is_dir() and not path.is_symlink():
      out += [f"{_V1_PLM_DIR}/{p.name}" for p in sorted(path.iterdir())
              if p.name not in _HF_NAMES or p.is_dir()]
    elif path.name not in _V1_NAMES or path.is_dir():
      out.append(path.name)
  return out


def check_destination(out_dir, *, protect: Mapping[str, Any] | None = None,
                      legacy=None) -> pathlib.Path:
  """Checks that an export may be written to (and replace) `out_dir`.

  Allowed: a path that does not exist yet (its parent folders are created),
  an empty folder, or an earlier export (`is_export`, or `legacy(path)`
  for exports written before the marker existed) that holds only what the
  export wrote (`foreign_entries`: anything added to it is named).

  Args:
    out_dir: the destination.
    protect: {description: folder} that the destination must neither be,
      lie inside nor contain (e.g. {"the run's --workdir": workdir}).
    legacy: optional predicate recognising older exports without marker.

  Returns:
    The resolved destination path.

  Raises:
    ExportDestinationError: naming the destination and the reason.
  """
  if out_dir is None or not str(out_dir).strip():
    raise ExportDestinationError("export: the destination (--out) is empty")
  out = pathlib.Path(out_dir).expanduser().resolve()
  for what, folder in (protect or {}).items():
    if folder is None:
      continue
    folder = pathlib.Path(folder).expanduser().resolve()
    if out == folder or folder in out.parents:
      where = "" if out == folder else "inside "
      raise ExportDestinationError(
          f"export: refusing --out {out}: it is {where}{what} {folder}; "
          "choose a folder outside it")
    if out in folder.parents:
      raise ExportDestinationError(
          f"export: refusing --out {out}: it contains {what} {folder}")
  for parent in out.parents:
    if parent.exists() and not parent.is_dir():
      raise ExportDestinationError(
          f"export: refusing --out {out}: {parent} is a file, not a folder")
  if out.exists() or out.is_symlink():
    if not out.is_dir():
      raise ExportDestinationError(
          f"export: refusing --out {out}: it is a file, not an export folder")
    if any(out.iterdir()) and not (is_export(out) or (legacy and legacy(out))):
      listing = sorted(p.name for p in out.iterdir())
      raise ExportDestinationError(
          f"export: refusing to replace {out}: it is not an earlier export "
          f"(no {EXPORT_MARKER}) and holds {listing[:8]}"
          f"{' ...' if len(listing) > 8 else ''}; choose a new or empty "
          "folder")
    foreign = foreign_entries(out) if is_export(out) else []
    if foreign:
      raise ExportDestinationError(
          f"export: refusing to replace {out}: it is an earlier export, but "
          f"holds files the export did not write: {foreign[:8]}"
          f"{' ...' if len(foreign) > 8 else ''}; move them out of the "
          "folder, or choose a new or empty folder")
  return out


def replace_dir(tmp: pathlib.Path, out_dir: pathlib.Path, *,
                legacy=None) -> None:
  """Moves a finished temp folder into place.

  An existing `out_dir` is replaced only if `check_destination` allows it
  (an earlier export or an empty folder); otherwise ExportDestinationError.
  """
  check_destination(out_dir, legacy=legacy)
  old = None
  if out_dir.exists():
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    os.replace(out_dir, old)
  os.replace(tmp, out_dir)
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(out_dir: pathlib.Path, kind: str, *, legacy=None):
  """Yields a temporary sibling of `out_dir` to write an export of `kind`
  into; on success marks it (`write_marker`), makes it world-readable and
  moves it into place (`replace_dir`); on any error removes it, so
  `out_dir` holds the previous export or nothing, never half of one."""
  out_dir = pathlib.Path(out_dir)
  out_dir.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-",
                                      dir=out_dir.parent))
  try:
    yield tmp
    write_marker(tmp, kind)
    # mkdtemp / safetensors create owner-only entries; make them readable.
    for f in tmp.rglob("*"):
      os.chmod(f, 0o755 if f.is_dir() else 0o644)
    os.chmod(tmp, 0o755)
    replace_dir(tmp, out_dir, legacy=legacy)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def export_hf(config: PLMConfig, params, out_dir, *, tokenizer=None,
              mlm_head_params=None, pooler=None) -> pathlib.Path:
  """Writes an HF checkpoint folder for our encoder (+ MLM head).

  Args:
    config: encoder config.
    params: PLMEncoder params.
    out_dir: destination folder: new, empty, or an earlier export (then
      replaced atomically); anything else is refused (`check_destination`).
    tokenizer: optional HF tokenizer, saved with `save_pretrained`.
    mlm_head_params: optional MLMHead params; a fresh head is written if None.
    pooler: optional HF pooler tensors to keep; fresh if None.

  Returns:
    The destination path.

  Raises:
    ExportDestinationError: `out_dir` may not be replaced (before any work).
  """
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  out_dir = check_destination(out_dir)
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
    write_marker(tmp, "hf_plm")
    # mkdtemp / safetensors create owner-only entries; make them readable.
    for f in tmp.rglob("*"):
      os.chmod(f, 0o755 if f.is_dir() else 0o644)
    os.chmod(tmp, 0o755)
    replace_dir(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  log.info("export: wrote %d tensors to %s", len(tensors), out_dir)
  return out_dir
