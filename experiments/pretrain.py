r"""FLIP pretraining launcher.

  python -m experiments.pretrain --workdir runs/pre \
    --config experiments/configs/flip_pretrain.py:dataset=synthetic

Rerunning the same command on the same workdir resumes. Multi-host (TPU pod
slice, several GPU hosts): add --jax_distributed on every process (or rely on
the standard JAX coordinator environment variables); each process reads only
its shard of the data.

The shared launcher (experiments.train) with this default config.
"""
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import launch

_CONFIG = launch.flag(config_flags.DEFINE_config_file, 
    "config", "experiments/configs/flip_pretrain.py",
    "Pretraining config file (with :variant).", lock_config=True)
_WORKDIR = launch.flag(flags.DEFINE_string, "workdir", None, "Run directory.", required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  launch.init_runtime()
  logging.info("done: %s", launch.run(_CONFIG.value, _WORKDIR.value))


if __name__ == "__main__":
  launch.run_main(main)
