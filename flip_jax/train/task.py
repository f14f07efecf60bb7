"""The seam between the shared training loop and a method.

A ``Task`` is what a method gives ``flip_jax.train.loop``; the loop owns
everything else (mesh, sharded init, restore priority, jit, cadence,
logging, checkpoints, early stopping, the single test evaluation) and knows
no method name.

What the loop calls, in lifecycle order::

  task = TASKS[config.task](config)
  data = task.load_data(workdir)     # TaskData: columns + the data contract
  task.build_model(data)             # the task's model (``task.model``)
  example = task.example_batch(data, n)
  ... sharded init: task.init_variables(rng, example, data.consts)
  ... scratch only: params, model_state, description = task.post_init(
          params, model_state, put, data)
  ... each step: task.grads(params, model_state, batch, consts, rngs,
                            micro_batches=M)
  ... each log step (with a data.monitor_batch): task.monitor(...)
  ... each evaluation: task.predict(variables, batch)
  ... at the end: task.results(best_variables)

The data facts the loop reads (the batch keys the step and ``predict`` read,
the host-side transforms, the replicated constants, the monitor batch) are
fields of ``TaskData``, filled by ``load_data``. The default loss machinery
(a data loss and a params loss, differentiated and micro-batched) is
``flip_jax.train.loss_task.LossTask``, which every task derives from.

Launch-time facts, read before any data is loaded or by the step's key
split: ``name``, ``rng_streams``, ``source_fields``, ``reads_text``,
``config_errors``, ``recorded_sections``.

Pure functions of the task (``grads``, ``predict``, ``monitor``) are traced
inside ``jax.jit``; they must not touch host state.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import numpy as np
from flax import linen as nn

Columns = Mapping[str, np.ndarray]
# (params, path tuple, host value) -> params with the value placed, sharded.
Placer = Callable[[Any, tuple[str, ...], Any], Any]
# Host-side ``fn(batch, *, seed, epoch, index) -> batch`` (picklable).
Transform = Callable[..., dict]


@dataclasses.dataclass
class TaskData:
  """What the loop needs from a task's data (the data contract).

  Attributes:
    train: columns of the training stream (numeric arrays, equal lengths;
      ``label`` and ``row_id`` at least).
    eval_splits: ``{'valid': columns, 'test': columns}`` for a task selected
      on valid; empty for a task that only trains (pretraining).
    feature_map: the run's FeatureMap (written to ``feature_map.json``).
    extra: anything else the task keeps (tokenizer, prepared data ...).
    train_keys: batch keys the train step reads (everything else stays on
      the host).
    eval_keys: batch keys ``predict`` reads.
    batch_transform: applied by the input pipeline to every training batch
      (grain workers run it); ``index`` holds the rows' positions in
      ``train``; None: none.
    eval_transform: the same for evaluation batches (``seed`` and ``epoch``
      are None: it must be deterministic), e.g. gathering per-row windows
      that the split stores as offsets; None: none.
    consts: replicated model constants passed to every step (e.g. the NCE
      noise distribution); default none.
    monitor_batch: a fixed held-out host batch scored by ``Task.monitor`` at
      every log step; None: none.
  """
  train: Columns
  eval_splits: dict[str, Columns]
  feature_map: Any
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)
  train_keys: tuple[str, ...] = ()
  eval_keys: tuple[str, ...] = ()
  batch_transform: Transform | None = None
  eval_transform: Transform | None = None
  consts: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  monitor_batch: dict[str, np.ndarray] | None = None


class Task:
  """Base class of every task: the hooks the loop calls.

  Subclasses set ``name`` and implement ``load_data``, ``build_model``,
  ``example_batch``, ``init_variables``, ``grads`` (every task inherits it
  from ``loss_task.LossTask``) and, for a task with evaluation splits,
  ``predict``. The CTR tasks derive from
  ``flip_jax.train.ctr_task.BaseCtrTask``, which implements all but the
  first two; the evaluation metrics are the loop's
  (``evaluate.split_metrics`` of the named probabilities ``predict``
  returns).
  """
  # ------------------------------------------------------ launch-time facts
  name: str = ""
  # PRNG streams of a training step; with several, the step key is split in
  # this order (e.g. ('dropout', 'noise')).
  rng_streams: tuple[str, ...] = ("dropout",)
  # Config fields naming another run the task starts from; a finished run
  # is reloaded with them cleared (`train.reload`: it reads no other run).
  source_fields: tuple[str, ...] = ("ckpt.init_from",)

  @classmethod
  def reads_text(cls, config) -> bool:
    """Whether a run of `config` tokenizes text with ``model.plm.name``'s
    tokenizer (launchers check that folder before any work)."""
    del config
    return False

  def __init__(self, config, model: nn.Module | None = None):
    """``model``: the task's model when it is built without data (a step
    test, a benchmark); otherwise ``build_model`` makes it."""
    self.config = config
    self.model: nn.Module | None = model

  def config_errors(self) -> list[str]:
    """Problems with the task's own config fields, one line each (checked
    with the shared ones before any work; see ``train.validate``)."""
    return []

  def recorded_sections(self) -> tuple[dict[str, Any], str]:
    """(config sections holding the architecture this run trains, the run
    they were resolved from or ''): pinned by the loop in ``model.json``
    at the start, checked on resume, read back by every reload
    (``model_record``), so a finished run never reads another run."""
    return {"model": self.config.model}, ""

  # ---------------------------------------------------- loop-facing hooks
  def load_data(self, workdir: str) -> TaskData:
    """The task's data and its data contract (``TaskData``); once per
    process, cache aware."""
    raise NotImplementedError

  def build_model(self, data: TaskData) -> nn.Module:
    """Builds the task's model, keeps it as ``self.model`` and returns it."""
    raise NotImplementedError

  def example_batch(self, data: TaskData, n: int) -> dict[str, np.ndarray]:
    """A host batch of ``n`` rows with the real shapes (init, eval_shape)."""
    raise NotImplementedError

  def init_variables(self, rng, example, consts):
    """rng -> boxed variables (``model.init``); traced once."""
    raise NotImplementedError

  def post_init(self, params, model_state, put: Placer, data: TaskData
                ) -> tuple[Any, Any, str]:
    """Fresh variables of a run started from scratch -> (params,
    model_state, what was done for the log and results).

    E.g. pretrained PLM weights or a bias from the data. Not called on
    resume or with ``ckpt.init_from`` (whose params win).
    """
    del put, data
    return params, model_state, "scratch"

  def grads(self, params, model_state, batch, consts, rngs, *,
            micro_batches: int):
    """(metrics, grads, new model_state) of the loss on the global batch
    (accumulated over ``micro_batches`` strided micro-batches when > 1);
    ``rngs`` is {stream: typed key} of ``rng_streams``."""
    raise NotImplementedError

  def predict(self, variables, batch) -> dict[str, jax.Array]:
    """Named probabilities of a batch: ``prob`` (+ ``<name>_prob``)."""
    raise NotImplementedError

  def monitor(self, variables, batch, consts) -> dict[str, jax.Array]:
    """Scalars of the model on ``data.monitor_batch`` in eval mode (traced;
    the loop logs them as ``heldout/<name>``)."""
    raise NotImplementedError

  def results(self, variables) -> dict[str, Any]:
    """Task-specific entries of ``results.json`` from the best variables."""
    del variables
    return {}
