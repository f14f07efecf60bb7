"""Methods on the shared loop: each a ``Task`` (``flip_jax.train.task``).

``TASKS`` is the explicit registry ``config.task`` is looked up in; a new
method adds its folder and one line here.
"""
from __future__ import annotations

from flip_jax.methods import ctr
from flip_jax.methods.flip import finetune as flip_finetune
from flip_jax.methods.flip import pretrain as flip_pretrain

TASKS = {
    "ctr": ctr.CtrTask,
    "flip_pretrain": flip_pretrain.FlipPretrainTask,
    "flip_finetune": flip_finetune.FlipFinetuneTask,
}


def make_task(config):
  """The task ``config.task`` names, built on ``config``."""
  if config.task not in TASKS:
    raise ValueError(f"config.task={config.task!r}: known tasks are "
                     f"{sorted(TASKS)}")
  return TASKS[config.task](config)
