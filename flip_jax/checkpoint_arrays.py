"""How orbax writes the arrays of a checkpoint: on a CPU backend, each
replicated array whole, not one slice per replica (`Checkpointer` calls
`write_replicas_whole_on_cpu` when it opens a folder)."""
from __future__ import annotations

import jax
import orbax.checkpoint as ocp
from absl import logging
# Not exported by orbax.checkpoint: the store of orbax's default jax.Array
# handler (per-array metadata; the handler registered on CPU keeps it) and
# the global registry itself, whose `add` can replace a handler without the
# warning `ocp.type_handlers.register_type_handler` logs.
from orbax.checkpoint._src.metadata import array_metadata_store
from orbax.checkpoint._src.serialization import type_handler_registry


def write_replicas_whole_on_cpu() -> bool:
  """On a CPU backend, registers orbax's jax.Array handler without
  replica-parallel writing, once per process; True if it did.

  Replica-parallel writing cuts every replicated array into one slice per
  replica, so that accelerators copy to the host in parallel. CPU devices
  share the host's memory: nothing is parallelised, and each slice is an
  eager XLA program compiled per device and shape. On 8 CPU devices the
  first save of a MiniLM-L1-sized FLIP state took 5.4 s against 1.1 s
  whole (`python -m benchmarks.cpu_replica_save`). Orbax itself turns the
  feature off when JAX_PLATFORMS names a GPU; TPU and GPU backends keep
  orbax's choice. A checkpoint reads back the same either way (same
  metadata; only which replica writes which part differs).
  """
  if jax.default_backend() != "cpu":
    return False
  registry = type_handler_registry.GLOBAL_TYPE_HANDLER_REGISTRY
  if isinstance(registry.get(jax.Array), _WholeReplicaArrayHandler):
    return False
  handler = _WholeReplicaArrayHandler(
      use_replica_parallel=False,
      array_metadata_store=array_metadata_store.Store())
  registry.add(jax.Array, handler, override=True, ignore_warnings=True)
  logging.info("checkpoint: CPU backend, replicated arrays written whole "
               "(orbax's replica-parallel writing off)")
  return True


class _WholeReplicaArrayHandler(ocp.type_handlers.ArrayHandler):
  """orbax's ArrayHandler, named so that it is registered once."""
