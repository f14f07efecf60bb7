"""Shared config pieces: variant-argument parsing, data, mesh and sharding."""
from __future__ import annotations

import ml_collections as mlc

from flip_jax import sharding

DATASETS = ("synthetic", "ml-1m", "ml-100k", "bookcrossing", "goodreads", "csv")


# PRNG implementation of the run's on-device keys (dropout, NCE noise; the
# data masking is drawn on the host). 'threefry2x32': the same bits on every
# backend and mesh (bitwise resume and the 8-device == 1-device tests rely on
# it). 'rbg' / 'unsafe_rbg': random bits from XLA's RngBitGenerator, the
# accelerator's own generator (JAX's fast choice on TPUs; 10% slower on a
# 2-core CPU, see BUILD.md); the bits differ between backends. A run
# resumes only with the impl it started with.
PRNG_IMPL = "threefry2x32"


def parse_arg(arg: str | None, **defaults) -> mlc.ConfigDict:
  """Parses 'k=v,k2=v2' variant strings; unknown keys are an error."""
  out = mlc.ConfigDict(defaults)
  if not arg:
    return out
  for item in arg.split(","):
    if not item:
      continue
    if "=" not in item:
      raise ValueError(f"config variant {item!r}: expected key=value")
    key, value = item.split("=", 1)
    if key not in defaults:
      raise ValueError(
          f"config variant key {key!r} unknown; known: {sorted(defaults)}")
    default = defaults[key]
    if isinstance(default, bool):
      value = value.lower() in ("1", "true", "yes")
    elif isinstance(default, int):
      value = int(value)
    elif isinstance(default, float):
      value = float(value)
    out[key] = value
  return out


def mesh_config() -> list:
  """(axis, size) pairs; -1 = the remaining devices."""
  return [("data", -1), ("fsdp", 1), ("tensor", 1)]


def logical_axis_rules() -> list:
  return [list(r) for r in sharding.DEFAULT_RULES]
