"""Process-level pieces of a run: the mesh, cache building, micro-batches."""
from __future__ import annotations

from typing import Any, Callable

import jax
from absl import logging
from jax.experimental import multihost_utils

from flip_jax import sharding


def mesh_and_rules(config):
  """The device mesh of ``config.mesh`` and the logical-axis rules."""
  mesh = sharding.make_mesh([tuple(a) for a in config.mesh])
  rules = sharding.rules_from_config(config.logical_axis_rules)
  logging.info("mesh %s over %d devices (%d processes)", dict(mesh.shape),
               jax.device_count(), jax.process_count())
  return mesh, rules


def main_process_first(fn: Callable[[], Any], name: str) -> Any:
  """Runs ``fn`` on process 0, then on the others (cache building).

  The processed-data caches are written once; the other processes then
  find them complete (on a shared filesystem) instead of racing to build
  the same entry.
  """
  if jax.process_count() == 1:
    return fn()
  out = fn() if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices(f"flip_jax:{name}")
  if jax.process_index() != 0:
    out = fn()
  return out


def num_micro_batches(batch_size: int, micro_batch_size: int) -> int:
  """batch_size / micro_batch_size, checked (0 or >= batch_size: 1)."""
  if micro_batch_size <= 0 or micro_batch_size >= batch_size:
    return 1
  if batch_size % micro_batch_size:
    raise ValueError(f"train.micro_batch_size={micro_batch_size} does not "
                     f"divide train.batch_size={batch_size}")
  return batch_size // micro_batch_size
