"""The official budgets, defined once: what each method's paper code trains.

The ``full`` presets read their epochs, batches and patience from here, and
the reports state every run's share of these budgets
(``experiments.budget``): pretraining examples and finetuning epochs as a
fraction of the official ones, so that a verdict says at what share of the
paper's budget it was measured.

Per task (``config.task``) and, for FLIP finetuning, per mode:
  epochs          the official number of epochs (the most, with early stopping)
  batch_size      the official global batch
  patience_epochs early stopping's patience in epochs (None: no early
                  stopping; pretraining runs its epochs)
The number of steps follows from the data: epochs x ceil(rows / batch).
Sources: ``shared/spec/FLIP.md`` 5.8 and 6 (justarter/FLIP's launchers and
parsers), ``shared/spec/CLICKPROMPT_SRP4CTR.md`` (PA-MLM, finetuning).
"""
from __future__ import annotations

# FLIP pretraining: 30 epochs of train+valid at 128 x 8 GPUs, cosine once per
# epoch; finetuning evaluates once per epoch with patience 3 (epochs).
FLIP_PRETRAIN = {"epochs": 30, "batch_size": 1024, "patience_epochs": None}
FLIP_FINETUNE = {
    "id": {"epochs": 20, "batch_size": 1024, "patience_epochs": 3},
    "plm": {"epochs": 25, "batch_size": 128, "patience_epochs": 3},
    "joint": {"epochs": 25, "batch_size": 128, "patience_epochs": 3},
}
# ClickPrompt's PA-MLM pretraining (bs 1024, 20 epochs).
CLICKPROMPT_PRETRAIN = {"epochs": 20, "batch_size": 1024,
                        "patience_epochs": None}

# (task, finetune mode or None) -> budget. A task not listed has no stated
# official budget: its rows' share is unknown and no verdict on them can be
# "contradicted".
BUDGETS = {
    ("flip_pretrain", None): FLIP_PRETRAIN,
    ("flip_finetune", "id"): FLIP_FINETUNE["id"],
    ("flip_finetune", "plm"): FLIP_FINETUNE["plm"],
    ("flip_finetune", "joint"): FLIP_FINETUNE["joint"],
    # CTR-BERT and P-Tab's finetuning train PLM models with FLIP's recipe.
    ("ctr_bert", None): FLIP_FINETUNE["plm"],
    ("clickprompt_pretrain", None): CLICKPROMPT_PRETRAIN,
}


def budget(task: str, mode: str | None = None) -> dict | None:
  """The official budget of a run of ``task`` (and FLIP finetuning mode)."""
  return BUDGETS.get((task, mode))
