"""Import of local HF BERT/RoBERTa checkpoints into our linen modules.

Reads `config.json` and the weights (`model.safetensors`, a sharded
`model.safetensors.index.json`, or `pytorch_model.bin` loaded with
`torch.load(weights_only=True)`, which refuses arbitrary pickled objects),
maps them with the table in `flip_jax/models/plm/hf_names.py`, and reports
what was loaded, ignored, unexpected or freshly initialised.

Missing encoder weights are an error (a partly random encoder is never what a
caller wants); a missing MLM head (e.g. MiniLM ships none) is initialised
fresh with a fixed seed and reported.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import pathlib
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from flip_jax import jsonio
from flip_jax import tree_paths
from flip_jax.models.plm import hf_names
from flip_jax.models.plm.bert import PLMEncoder
from flip_jax.models.plm.config import PLMConfig
from flip_jax.models.plm.heads import MLMHead, PLMForMaskedLM
from flip_jax.models.plm.registry import resolve_path

log = logging.getLogger(__name__)

_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json",
                    "tokenizer_config.json")
# Seed of freshly initialised MLM heads (reproducible across runs).
HEAD_INIT_SEED = 0


@dataclasses.dataclass
class ImportReport:
  """What an import did; `str()` gives a one-paragraph summary.

  Attributes:
    path: checkpoint folder.
    weights_file: the file(s) read.
    model_type: 'bert' or 'roberta'.
    prefix: HF key prefix found on encoder keys ('bert.', 'roberta.', '').
    loaded: number of tensors mapped into params.
    ignored: keys skipped on purpose (pooler, position_ids buffers, tied
      decoder copies).
    unexpected: keys the table does not know (never silently dropped).
    truncated: keys of layers dropped by `num_layers`.
    missing_head: HF head keys absent from the checkpoint.
    head_initialized: True when the MLM head was freshly initialised.
    pooler: the checkpoint's pooler tensors (re-exported unchanged), if any.
  """
  path: str
  weights_file: str
  model_type: str
  prefix: str
  loaded: int = 0
  ignored: list[str] = dataclasses.field(default_factory=list)
  unexpected: list[str] = dataclasses.field(default_factory=list)
  truncated: list[str] = dataclasses.field(default_factory=list)
  missing_head: list[str] = dataclasses.field(default_factory=list)
  head_initialized: bool = False
  pooler: dict[str, np.ndarray] | None = None

  def __str__(self):
    parts = [f"imported {self.loaded} tensors from {self.weights_file}"
             f" ({self.model_type}, prefix {self.prefix!r})"]
    if self.truncated:
      parts.append(f"dropped {len(self.truncated)} tensors of truncated"
                   " layers")
    if self.ignored:
      parts.append(f"ignored {self.ignored}")
    if self.unexpected:
      parts.append(f"UNEXPECTED {self.unexpected}")
    if self.head_initialized:
      parts.append(f"MLM head freshly initialised (seed {HEAD_INIT_SEED});"
                   f" missing {self.missing_head}")
    return "; ".join(parts)


def read_config(path: pathlib.Path) -> PLMConfig:
  """Reads `{path}/config.json` into a PLMConfig with clear errors."""
  cfg_file = path / "config.json"
  if not cfg_file.is_file():
    raise FileNotFoundError(f"{path}: no config.json (not an HF checkpoint)")
  d = jsonio.read_json(cfg_file)  # bad JSON: a ValueError naming the file
  try:
    return PLMConfig.from_hf(d)
  except ValueError as e:
    raise ValueError(f"{cfg_file}: {e}") from e


def read_weights(path: pathlib.Path) -> tuple[dict[str, np.ndarray], str]:
  """Loads every tensor of a checkpoint folder as numpy arrays.

  Returns:
    ({key: array}, description of the file(s) read).
  """
  st = path / "model.safetensors"
  index = path / "model.safetensors.index.json"
  pt = path / "pytorch_model.bin"
  if st.is_file() or index.is_file():
    # pylint: disable-next=g-import-not-at-top
    from safetensors import numpy as st_np
    if st.is_file():
      return dict(st_np.load_file(st)), str(st)
    shards = sorted(set(jsonio.read_json(index)["weight_map"].values()))
    out = {}
    for shard in shards:
      out.update(st_np.load_file(path / shard))
    return out, f"{index} ({len(shards)} shards)"
  if pt.is_file():
    import torch  # pylint: disable=g-import-not-at-top
    state = torch.load(pt, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
            for k, v in state.items()}, str(pt)
  raise FileNotFoundError(
      f"{path}: no weights (model.safetensors, model.safetensors.index.json"
      " or pytorch_model.bin)")


def _find_prefix(tensors: dict[str, np.ndarray], cfg: PLMConfig,
                 source: str) -> str:
  """The HF prefix ('bert.', 'roberta.' or '') of the encoder keys."""
  probe = "embeddings.word_embeddings.weight"
  bases = hf_names.BASE_PREFIX
  for prefix in (bases[cfg.model_type], *bases.values(), ""):
    if prefix + probe in tensors:
      return prefix
  raise ValueError(f"{source}: no '{probe}' under any prefix"
                   f" {sorted(set(bases.values()))} or none; is this"
                   f" a {cfg.model_type} checkpoint?")


def _abstract_shapes(kind: type[nn.Module], cfg: PLMConfig) -> dict:
  """{param path: ShapeDtypeStruct} of ``kind(cfg)`` (a copy of the
  process-wide memo: every stage of a run and every test loading the same
  architecture traces its init once)."""
  return dict(_traced_shapes(kind, cfg))


@functools.lru_cache(maxsize=64)
def _traced_shapes(kind: type[nn.Module], cfg: PLMConfig) -> dict:
  ids = jnp.zeros((1, 2), jnp.int32)
  tree = jax.eval_shape(lambda: kind(cfg).init(jax.random.key(0), ids,
                                               ids)["params"])
  return tree_paths.flat_params(tree)


def _map(rows, tensors, prefix, cfg, shapes, used, dtype, source):
  """Applies rows HF -> Flax with shape checks; returns flat params."""
  flat, missing = {}, []
  for path, key, hook in rows:
    full = prefix + key
    if full not in tensors:
      missing.append(full)
      continue
    value = hook.to_flax(np.asarray(tensors[full]), cfg)
    want = tuple(shapes[path].shape)
    if value.shape != want:
      raise ValueError(
          f"{source}: shape mismatch for {full}: checkpoint"
          f" {tuple(tensors[full].shape)} -> {value.shape} in Flax layout,"
          f" model expects {want} at {path}")
    flat[path] = jnp.asarray(value, dtype)
    used.add(full)
  return flat, missing


def import_checkpoint(path: pathlib.Path, cfg: PLMConfig, *,
                      param_dtype=jnp.float32, with_mlm_head: bool = False):
  """Maps a checkpoint folder onto encoder (and head) params.

  Args:
    path: checkpoint folder.
    cfg: config to build (may have fewer layers than the checkpoint).
    param_dtype: dtype of the returned params.
    with_mlm_head: also map (or freshly initialise) the MLM head.

  Returns:
    (encoder params, head params or None, ImportReport).
  """
  tensors, source = read_weights(path)
  tensors = {hf_names.normalize_hf_key(k): v for k, v in tensors.items()}
  prefix = _find_prefix(tensors, cfg, source)
  report = ImportReport(str(path), source, cfg.model_type, prefix)
  used: set[str] = set()
  enc_shapes = _abstract_shapes(PLMEncoder, cfg)
  enc, missing = _map(hf_names.encoder_rows(cfg), tensors, prefix, cfg,
                      enc_shapes, used, param_dtype, source)
  if missing:
    raise ValueError(f"{source}: missing encoder weights {missing[:8]}"
                     f"{' ...' if len(missing) > 8 else ''}")
  head = None
  if with_mlm_head:
    head_shapes = {k[len("mlm_head/"):]: v for k, v in _abstract_shapes(
        PLMForMaskedLM, cfg).items() if k.startswith("mlm_head/")}
    head, report.missing_head = _map(hf_names.head_rows(cfg), tensors, "", cfg,
                                     head_shapes, used, param_dtype, source)
    bias_key = hf_names.head_rows(cfg)[-1][1]
    alias = hf_names.TIED_DECODER_KEYS[cfg.model_type][1]
    if bias_key in report.missing_head and alias in tensors:
      head["bias"] = jnp.asarray(tensors[alias], param_dtype)
      report.missing_head.remove(bias_key)
      used.add(alias)
    if report.missing_head:
      fresh = MLMHead(cfg, param_dtype=param_dtype).init(
          jax.random.key(HEAD_INIT_SEED),
          jnp.zeros((1, cfg.hidden_size), param_dtype),
          jnp.zeros((cfg.vocab_size, cfg.hidden_size), param_dtype))
      fresh = tree_paths.flat_params(fresh["params"])
      head = fresh  # a partial head is replaced entirely: never half-trained
      report.head_initialized = True
    head = tree_paths.unflatten(head)
  _classify_leftovers(tensors, used, prefix, cfg, report, enc)
  report.loaded = len(used)
  return tree_paths.unflatten(enc), head, report


def _classify_leftovers(tensors, used, prefix, cfg, report, enc):
  """Sorts unused keys into truncated / ignored / unexpected."""
  word = np.asarray(enc["embeddings/word_embeddings/embedding"])
  dec_w, dec_b = hf_names.TIED_DECODER_KEYS[cfg.model_type]
  head_keys = {k for _, k, _ in hf_names.head_rows(cfg)}
  layer_re = f"^{prefix}encoder\\.layer\\.(\\d+)\\."
  for key in sorted(set(tensors) - used):
    rel = key[len(prefix):] if prefix and key.startswith(prefix) else key
    m = re.match(layer_re, key)
    if m and int(m.group(1)) >= cfg.num_layers:
      report.truncated.append(key)
    elif any(p.search(rel) for p in hf_names.IGNORED_PATTERNS):
      report.ignored.append(key)
    elif key == dec_w and tensors[key].shape == word.shape and np.array_equal(
        tensors[key].astype(word.dtype), word):
      report.ignored.append(key)  # tied copy of the word table
    elif key == dec_b or key in head_keys:
      report.ignored.append(key)  # head present but not requested
    else:
      report.unexpected.append(key)
  pooler = {k: tensors[prefix + k] for k in hf_names.POOLER_KEYS
            if prefix + k in tensors}
  report.pooler = pooler if len(pooler) == len(hf_names.POOLER_KEYS) else None


def load_tokenizer(path: pathlib.Path):
  """AutoTokenizer from the folder (offline); None when it has no files."""
  if not any((path / f).is_file() for f in _TOKENIZER_FILES):
    log.warning("%s: no tokenizer files; returning tokenizer=None", path)
    return None
  from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top
  return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def load_pretrained(name_or_path, *, num_layers: int | None = None,
                    dtype=jnp.float32, param_dtype=jnp.float32,
                    dropout: float | None = None, remat: bool = False,
                    attention: str = "xla",
                    attention_dropout: float | None = None,
                    dropout_bits: int = 32,
                    fused_qkv: bool = False,
                    with_mlm_head: bool = False,
                    return_report: bool = False) -> tuple[Any, ...]:
  """Builds a PLM module and its params from a local HF checkpoint.

  Args:
    name_or_path: short name ('minilm-l6') or checkpoint folder.
    num_layers: keep only the first N layers (None = all).
    dtype: compute dtype of the module.
    param_dtype: dtype of the returned params.
    dropout: overrides both hidden and attention dropout; None keeps the
      checkpoint's config values.
    remat: per-layer rematerialisation.
    attention: 'xla', 'fused' or 'cudnn' (PLMConfig.attention_impl).
    attention_dropout: overrides the attention dropout alone (after
      `dropout`); 'fused' attention trains only with 0.
    dropout_bits: random bits per dropped element, 32 / 16 / 8
      (PLMConfig.dropout_bits).
    fused_qkv: one matmul for query, key and value (PLMConfig.fused_qkv;
      same params).
    with_mlm_head: return `PLMForMaskedLM` with params {'encoder', 'mlm_head'}
      (head from the checkpoint, or fresh and reported when absent) instead of
      `PLMEncoder` with the encoder param dict.
    return_report: also return the ImportReport as a 4th value.

  Returns:
    (module, params, tokenizer) or (module, params, tokenizer, report).
    The tokenizer is None if the folder has no tokenizer files.
  """
  path = resolve_path(name_or_path)
  cfg = read_config(path)
  if num_layers is not None:
    if not 1 <= num_layers <= cfg.num_layers:
      raise ValueError(f"{path}: num_layers={num_layers} outside [1,"
                       f" {cfg.num_layers}] of this checkpoint")
    cfg = cfg.replace(num_layers=num_layers)
  if dropout is not None:
    cfg = cfg.replace(hidden_dropout=dropout, attention_dropout=dropout)
  if attention_dropout is not None:
    cfg = cfg.replace(attention_dropout=attention_dropout)
  cfg = cfg.replace(attention_impl=attention, dropout_bits=dropout_bits,
                    fused_qkv=fused_qkv)
  enc, head, report = import_checkpoint(path, cfg, param_dtype=param_dtype,
                                        with_mlm_head=with_mlm_head)
  log.info("load_pretrained(%s): %s", name_or_path, report)
  if report.unexpected:
    log.warning("load_pretrained(%s): unexpected keys %s", name_or_path,
                report.unexpected)
  if report.head_initialized:
    log.warning("load_pretrained(%s): checkpoint has no (complete) MLM head;"
                " using a freshly initialised one (seed %d)", name_or_path,
                HEAD_INIT_SEED)
  if with_mlm_head:
    module = PLMForMaskedLM(cfg, dtype, param_dtype, remat)
    params = {"encoder": enc, "mlm_head": head}
  else:
    module, params = PLMEncoder(cfg, dtype, param_dtype, remat), enc
  out = (module, params, load_tokenizer(path))
  return out + (report,) if return_report else out
