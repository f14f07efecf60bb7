r"""FLIP finetuning launcher (modes id | plm | joint, and the baselines).

  python -m experiments.finetune --workdir runs/ft \
    --config experiments/configs/flip_finetune.py:dataset=synthetic,mode=joint \
    --config.ckpt.init_from runs/pre

Writes <workdir>/results.json (valid/test AUC and LogLoss at the best valid
step). Rerunning on the same workdir resumes.

The shared launcher (experiments.train) with this default config.
"""
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import launch

_CONFIG = launch.flag(config_flags.DEFINE_config_file, 
    "config", "experiments/configs/flip_finetune.py",
    "Finetuning config file (with :variant).", lock_config=True)
_WORKDIR = launch.flag(flags.DEFINE_string, "workdir", None, "Run directory.", required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  launch.init_runtime()
  logging.info("done: %s", launch.run(_CONFIG.value, _WORKDIR.value))


if __name__ == "__main__":
  launch.run_main(main)
