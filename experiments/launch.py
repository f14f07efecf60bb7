"""Runtime set-up shared by every absl main: multi-host init and logging."""
import logging as logging_std
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


def flag(define, name: str, *args, **kwargs):
  """Defines an absl flag, or reuses it if another entry point already did.

  Several launchers share flag names (--workdir, --config, --dataset ...);
  importing two of them into one process (tests, notebooks) must not raise
  DuplicateFlagError. The returned object has ``.value`` either way.
  """
  if name in flags.FLAGS:
    return flags.FLAGS[name]
  return define(name, *args, **kwargs)


class _QuietLibraries(logging_std.Filter):
  """Drops INFO chatter of orbax / grain (warnings and errors still pass)."""

  def filter(self, record):
    noisy = ("/orbax/", "/grain/", "/absl/testing/")
    return record.levelno >= logging_std.WARNING or not any(
        n in record.pathname for n in noisy)


def init_runtime() -> None:
  """Initialises jax.distributed when asked and logs the topology."""
  os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
  logging.get_absl_handler().addFilter(_QuietLibraries())
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


def run(config, workdir: str):
  """Trains ``config.task`` in ``workdir`` on the shared loop.

  Returns the task's results (evaluated tasks) or its last metrics.
  """
  # pylint: disable=g-import-not-at-top
  from flip_jax import methods
  from flip_jax.train import loop
  # pylint: enable=g-import-not-at-top
  return loop.train_and_evaluate(config, workdir, methods.make_task(config))
