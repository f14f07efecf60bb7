"""Scoring a finished finetuning run's splits with its best checkpoint.

Shared by ``experiments.predict`` (one split to a file) and the fusion
bound (``experiments.fusion``: valid and test predictions of runs written
before the loop saved ``predictions.npz``).
"""
from __future__ import annotations

import numpy as np

# Tasks whose finished runs score_splits can rebuild (FLIP's loader).
SCORABLE = ("flip_finetune",)


def score_splits(workdir: str, splits, *, batch_size: int = 256,
                 data_overrides: dict | None = None
                 ) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
  """({split: named predictions in row order}, {split: metrics}).

  The predictions hold ``row_id``, ``label``, ``prob`` and every branch's
  ``<name>_prob`` (the joint model's ``ctr_prob`` / ``txt_prob``).
  """
  # pylint: disable=g-import-not-at-top
  from flip_jax import methods
  from flip_jax.data import pipeline
  from flip_jax.data import prepare
  from flip_jax.methods.flip import finetune
  from flip_jax.train import evaluate as eval_lib
  from flip_jax.train import finished
  from flip_jax.train import runtime
  # pylint: enable=g-import-not-at-top
  task_name = finished.require(workdir, flag=None)["task"]
  if task_name not in SCORABLE:
    raise ValueError(f"{workdir} is a finished {task_name} run; scoring "
                     f"rebuilds {', '.join(SCORABLE)} runs only so far")
  config, model, variables, tokenizer, prepared = finetune.load_finetuned(
      workdir, data_overrides=data_overrides)
  if tokenizer is not None:
    tables = prepare.tokenize_dataset(prepared, tokenizer,
                                      config.data.max_length)
  else:
    tables = prepared.splits
  keys = finetune.model_keys(config.finetune.mode)
  mesh, rules = runtime.mesh_and_rules(config)
  task = methods.make_task(config)
  task.model = model
  predict_fn = eval_lib.make_predict_fn(task.predict, mesh, rules, None)
  preds, metrics = {}, {}
  for split in splits:
    columns = pipeline.array_columns(tables[split], keys)
    preds[split] = eval_lib.predict_split(
        predict_fn, variables, columns, keys=keys, batch_size=batch_size,
        mesh=mesh, rules=rules)
    metrics[split] = task.eval_metrics(preds[split], split)
  return preds, metrics
