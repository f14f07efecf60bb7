"""The logical axis names of flip_jax and the default rules table.

Model code names axes (``nn.with_logical_partitioning`` for params,
``nn.with_logical_constraint`` for activations); a rules table maps those
names onto the mesh axes (``flip_jax.sharding`` applies it). Plain data,
no jax: config files read the default table (``experiments/configs``), and
a launcher parses its flags and config before it imports jax.

Logical axis names used across flip_jax:

  batch          examples of a batch
  length         text positions
  vocab          PLM vocabulary rows
  embed          PLM hidden size
  heads, kv      attention heads and per-head width
  mlp            PLM feed-forward width
  feature_vocab  rows of the global CTR feature tables (N)
  feature_embed  CTR embedding width
  field          CTR fields
  hidden_in      input width of a CTR / head dense kernel (a kernel's two
                 axes need distinct names)
  hidden         output widths of CTR / head MLP layers
  proj, proj_in  ICL projection heads
  expert, rank   DCNv2 mixture-of-experts axes
"""
from __future__ import annotations

from typing import Any

# Default: pure data parallelism over ("data", "fsdp"); parameters replicated
# unless a rule maps them. Order matters: first matching rule wins.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
    ("feature_vocab", ("fsdp", "tensor")),
    ("feature_embed", None),
    ("field", None),
    ("hidden_in", None),
    ("hidden", None),
    ("proj_in", None),
    ("proj", None),
    ("expert", None),
    ("rank_in", None),
    ("rank", None),
)
