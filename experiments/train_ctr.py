r"""Trains an ID-based CTR backbone from scratch (the ``ctr`` task).

  python -m experiments.train_ctr --workdir runs/dcnv2_ml1m \
    --config experiments/configs/ctr.py:dataset=ml-1m,model=dcnv2 \
    --config.data.data_dir=../shared/data/ml-1m

The shared launcher (experiments.train) with ``configs/ctr.py`` as its
default config: the shared loop gives the run checkpoints, resume (rerun the
same command), TensorBoard, early stopping on valid AUC with the best
checkpoint reloaded and the test split evaluated once (``results.json``).
"""
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import launch

_CONFIG = launch.flag(config_flags.DEFINE_config_file, "config",
                      "experiments/configs/ctr.py",
                      "CTR config file (with :variant).", lock_config=True)
_WORKDIR = launch.flag(flags.DEFINE_string, "workdir", None, "Run directory.",
                       required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  launch.init_runtime()
  logging.info("done: %s", launch.run(_CONFIG.value, _WORKDIR.value))


if __name__ == "__main__":
  launch.run_main(main)
