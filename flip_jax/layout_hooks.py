"""The layout hook shared by the Flax <-> torch name tables.

A name table row is (flax path pattern, torch key pattern, hook name); the
hook moves one array between the two layouts. Both tables use this one type
and one call convention:

  hook.to_torch(array, cfg) -> array in the torch layout
  hook.to_flax(array, cfg)  -> array in the Flax layout (the exact inverse)

`cfg` is the model config a hook may need for its shapes (the PLM head
hooks read `num_heads` / `head_dim` from a `PLMConfig`); hooks that do not
need it accept `cfg=None` and ignore it. Hooks are pure reshapes and
transposes, so a round trip is bit-identical.

Tables: `flip_jax.models.plm.hf_names` (PLM <-> Hugging Face BERT/RoBERTa)
and `flip_jax.export.ctr_mapping` (CTR backbones and finetuning heads <->
the torch twins). This module sits at the top of the package so that
`flip_jax.models` can use it without importing `flip_jax.export`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

Array = np.ndarray


@dataclasses.dataclass(frozen=True)
class Hook:
  """A pair of exact inverse layout transforms, each (array, cfg) -> array."""
  name: str
  to_torch: Callable[[Array, Any], Array]
  to_flax: Callable[[Array, Any], Array]


# The hooks both tables use; config-free.
IDENTITY = Hook("identity", lambda a, cfg=None: a, lambda a, cfg=None: a)
# Dense kernel (in, out) <-> torch Linear weight (out, in).
TRANSPOSE = Hook("transpose", lambda a, cfg=None: a.T,
                 lambda a, cfg=None: a.T)
