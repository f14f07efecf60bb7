"""A finished run, reloaded through the same Task hooks that trained it.

`load_run(workdir)` rebuilds any method's finished, evaluated run from its
own folder: the config (upgraded by `config_compat` through
`finished.require`), the architecture it trained (`model_record`'s
sections, never the run it was initialised from), the task, its data (the
run's vocabulary, field by field) and the best checkpoint's variables.
`predict_splits` scores splits exactly as the loop's evaluation does
(`task.predict`, the data's `eval_keys` and `eval_transform`, sharded
batches). Nothing here knows a method: a task names the config fields that
point at other runs (`Task.source_fields`), and they are cleared, so a
reloaded run reads no other run.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections as mlc
import numpy as np

from flip_jax import checkpoint
from flip_jax.train import evaluate as eval_lib
from flip_jax.train import finished
from flip_jax.train import model_record
from flip_jax.train import runtime
from flip_jax.train import task as task_lib


@dataclasses.dataclass
class Run:
  """A reloaded run: what `predict_splits` and exporters need."""
  workdir: str
  config: mlc.ConfigDict
  task: task_lib.Task
  data: task_lib.TaskData
  variables: dict[str, Any]   # host arrays: {'params': ..., **model_state}
  best_step: int


def _set(config, dotted: str, value) -> None:
  node = config
  *parents, leaf = dotted.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value


def run_config(workdir: str, tasks: dict[str, type], *,
               data_overrides: dict | None = None) -> mlc.ConfigDict:
  """The run's config, standing alone: its recorded sections in place and
  the task's `source_fields` cleared; `data_overrides` replace data fields
  (a run from before `model_record` keeps its source fields)."""
  config = mlc.ConfigDict(finished.require(workdir, flag=None))
  for key, value in (data_overrides or {}).items():
    config.data[key] = value
  record = model_record.load(workdir)
  for name, section in (record or {}).items():
    config[name] = mlc.ConfigDict(section)
  if config.task not in tasks:
    raise ValueError(f"{workdir}: config.task={config.task!r} is no known "
                     f"task ({sorted(tasks)})")
  if record is not None:
    # An older run without its record (warned by model_record.load) keeps
    # them: its sections are resolved from those runs, as they are now.
    for field in tasks[config.task].source_fields:
      _set(config, field, "")
  return config


def load_run(workdir: str, *, data_overrides: dict | None = None) -> Run:
  """Rebuilds a finished run of any method (see the module docstring).

  Raises:
    finished.NotAFinishedRunError: not a finished evaluated run (one line).
    ValueError: the data's vocabulary differs from the run's (the field).
    FileNotFoundError: no best checkpoint.
  """
  from flip_jax import methods  # pylint: disable=g-import-not-at-top
  # Absolute: orbax refuses relative checkpoint paths (`predict
  # --workdir=runs/x` from the checkout).
  workdir = os.path.abspath(os.fspath(workdir))
  config = run_config(workdir, methods.TASKS, data_overrides=data_overrides)
  task = methods.make_task(config)
  data = task.load_data(workdir)
  finished.check_feature_map(workdir, data.feature_map)
  task.build_model(data)
  best_dir = os.path.join(workdir, "best")
  with checkpoint.Checkpointer(best_dir, max_to_keep=1, save_interval_steps=1,
                               async_save=False) as best:
    step = best.latest_step()
  if step is None:
    raise FileNotFoundError(f"{best_dir}: no best checkpoint")
  variables = checkpoint.restore_variables(best_dir, step=step)
  return Run(workdir, config, task, data, variables, step)


def predict_splits(run: Run, splits, *, batch_size: int = 256
                   ) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
  """({split: named predictions in row order}, {split: metrics})."""
  task, data = run.task, run.data
  missing = [s for s in splits if s not in data.eval_splits
             and s != "train"]
  if missing:
    raise ValueError(f"{run.workdir}: no split {missing} (this run has "
                     f"{sorted(data.eval_splits)} and train)")
  mesh, rules = runtime.mesh_and_rules(run.config)
  predict_fn = eval_lib.make_predict_fn(task.predict, mesh, rules, None)
  preds, metrics = {}, {}
  for split in splits:
    columns = data.train if split == "train" else data.eval_splits[split]
    preds[split] = eval_lib.predict_split(
        predict_fn, run.variables, columns, keys=data.eval_keys,
        batch_size=batch_size, mesh=mesh, rules=rules,
        transform=data.eval_transform)
    metrics[split] = eval_lib.split_metrics(preds[split], split)
  return preds, metrics
