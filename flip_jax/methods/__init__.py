"""Methods on the shared loop: each a ``Task`` (``flip_jax.train.task``).

``TASKS`` is the explicit registry ``config.task`` is looked up in; a new
method adds its folder and one line here.
"""
from __future__ import annotations

import ml_collections

from flip_jax.data import tokenize as tokenize_lib
from flip_jax.methods import ctr
from flip_jax.methods.baselines import ctr_bert
from flip_jax.methods.baselines import p_tab
from flip_jax.methods.clickprompt import finetune as clickprompt_finetune
from flip_jax.methods.clickprompt import pretrain as clickprompt_pretrain
from flip_jax.methods.flip import finetune as flip_finetune
from flip_jax.methods.flip import pretrain as flip_pretrain
from flip_jax.methods.srp4ctr import finetune as srp4ctr_finetune
from flip_jax.methods.srp4ctr import pretrain as srp4ctr_pretrain

TASKS = {
    "ctr": ctr.CtrTask,
    "ctr_bert": ctr_bert.CtrBertTask,
    "p_tab_pretrain": p_tab.PTabPretrainTask,
    "flip_pretrain": flip_pretrain.FlipPretrainTask,
    "flip_finetune": flip_finetune.FlipFinetuneTask,
    "srp4ctr_pretrain": srp4ctr_pretrain.Srp4ctrPretrainTask,
    "srp4ctr": srp4ctr_finetune.Srp4ctrTask,
    "clickprompt_pretrain": clickprompt_pretrain.ClickPromptPretrainTask,
    "clickprompt_finetune": clickprompt_finetune.ClickPromptFinetuneTask,
}


# Task -> the module exporting a finished run of it to PyTorch: its
# ``write(run, out_dir, source)`` and ``compare(folder, run, batch)`` (the
# contract of flip_jax.methods.run_export; experiments.export_torch).
EXPORTERS = {
    "ctr": "flip_jax.methods.ctr_export",
    "ctr_bert": "flip_jax.methods.baselines.ctr_bert_export",
    "flip_finetune": "flip_jax.methods.flip.export",
    "srp4ctr": "flip_jax.methods.srp4ctr.export",
    "clickprompt_finetune": "flip_jax.methods.clickprompt.export",
}


def make_task(config):
  """The task ``config.task`` names, built on ``config``."""
  if config.task not in TASKS:
    raise ValueError(f"config.task={config.task!r}: known tasks are "
                     f"{sorted(TASKS)}")
  return TASKS[config.task](config)


def _get(config, *keys):
  for k in keys:
    try:
      config = config[k]
    except (KeyError, TypeError, AttributeError):
      return None
  return config


def reads_text(config) -> bool:
  """Whether a run of ``config`` (a ConfigDict or a run's config.json)
  tokenizes text with ``model.plm.name``'s tokenizer: its task's
  ``reads_text``; False for an unknown task or a missing field (validation
  says so)."""
  task = TASKS.get(_get(config, "task"))
  if isinstance(config, dict):
    config = ml_collections.ConfigDict(config)
  try:
    return task is not None and task.reads_text(config)
  except (KeyError, AttributeError):
    return False


def check_plm_folder(config) -> None:
  """A local ``model.plm.name`` folder of a run that reads text must hold
  tokenizer files: said before any work, not when the PLM loads with no
  tokenizer much later.

  Raises:
    FileNotFoundError: naming the folder, the field and the files looked for.
  """
  if reads_text(config):
    tokenize_lib.check_tokenizer_folder(_get(config, "model", "plm", "name"),
                                        "model.plm.name")
