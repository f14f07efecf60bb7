"""Export side of the PLM <-> HF BERT/RoBERTa table: Flax params -> tensors.

The name table itself (rows, hooks, `expand`, `encoder_rows`, `head_rows`,
`normalize_hf_key`, prefixes and pooler / tied-decoder keys) lives in
`flip_jax.models.plm.hf_names`, next to the importer that also uses it;
this module holds only what the exporter needs on top of it.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from flip_jax.layout_hooks import Hook
from flip_jax.models.plm.config import PLMConfig

Array = np.ndarray


def flax_to_torch(cfg: PLMConfig, flat_params: Mapping[str, Array],
                  rows: list[tuple[str, str, Hook]], prefix: str = ""
                  ) -> dict[str, Array]:
  """Flat '/'-joined Flax params -> HF tensors (contiguous numpy arrays).

  Args:
    cfg: the model config (head counts for the reshaping hooks).
    flat_params: {'embeddings/word_embeddings/embedding': array, ...}.
    rows: expanded rows (`hf_names.encoder_rows` or `hf_names.head_rows`).
    prefix: prepended to every HF key (e.g. 'bert.').

  Returns:
    {HF key: array}.

  Raises:
    KeyError: a row's Flax path is absent, or params hold unmapped paths.
  """
  out = {}
  missing = [p for p, _, _ in rows if p not in flat_params]
  if missing:
    raise KeyError(f"flax_to_torch: params lack {missing[:8]}"
                   f"{' ...' if len(missing) > 8 else ''}")
  extra = sorted(set(flat_params) - {p for p, _, _ in rows})
  if extra:
    raise KeyError(f"flax_to_torch: params hold unmapped paths {extra[:8]}")
  for path, key, hook in rows:
    out[prefix + key] = np.ascontiguousarray(
        hook.to_torch(np.asarray(flat_params[path]), cfg))
  return out
