"""Runtime set-up shared by every absl main: multi-host init and logging."""
import os

import jax
from absl import flags
from absl import logging

_DISTRIBUTED = flags.DEFINE_bool(
    "jax_distributed", False,
    "Call jax.distributed.initialize() (multi-host runs). Arguments come from "
    "--coordinator_address/--num_processes/--process_id when given, else from "
    "the environment (TPU pods, SLURM, JAX_COORDINATOR_ADDRESS ...).")
_COORD = flags.DEFINE_string("coordinator_address", None,
                             "host:port of process 0 (multi-host).")
_NPROC = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PID = flags.DEFINE_integer("process_id", None, "This process's index.")


def init_runtime() -> None:
  """Initialises jax.distributed when asked and logs the topology."""
  os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
  if _DISTRIBUTED.value or os.environ.get("JAX_COORDINATOR_ADDRESS"):
    kwargs = {}
    if _COORD.value:
      kwargs = dict(coordinator_address=_COORD.value,
                    num_processes=_NPROC.value, process_id=_PID.value)
    jax.distributed.initialize(**kwargs)
  logging.info("process %d/%d, %d local / %d global devices (%s)",
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform)
