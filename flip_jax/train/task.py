"""The seam between the shared training loop and a method.

A ``Task`` is everything a method gives ``flip_jax.train.loop``: its data
(columns for the training stream and the evaluation splits), its host-side
batch transform (FLIP's masks), its model and example batch, what happens to
freshly initialised params (pretrained PLM weights, the NCE bias), its loss
(taking the micro-batch denominators), optionally its own gradient function
(FLIP's cached-gradient ICL over the global batch), and its named
predictions for evaluation. The loop owns everything else (mesh, sharded
init, restore priority, jit, cadence, logging, checkpoints, early stopping,
the single test evaluation) and knows no method name.

Lifecycle, driven by the loop::

  task = TASKS[config.task](config)
  data = task.load_data(workdir)          # once per process (cache aware)
  model = task.build_model(data)          # sets task.model
  ... sharded init via task.init_variables(rng, example, consts)
  ... scratch: task.post_init(params, model_state, put)
  ... each step: task.grads(...) -> default: value_and_grad of
      task.data_loss + task.param_loss, micro-batched when asked.

Pure functions of the task (``data_loss``, ``predict`` ...) are traced inside
``jax.jit``; they must not touch host state.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from flip_jax.train import microbatch
from flip_jax.train import state as state_lib

Columns = Mapping[str, np.ndarray]
# (params, path tuple, host value) -> params with the value placed, sharded.
Placer = Callable[[Any, tuple[str, ...], Any], Any]


@dataclasses.dataclass
class TaskData:
  """What the loop needs from a task's data.

  Attributes:
    train: columns of the training stream (numeric arrays, equal lengths;
      ``label`` and ``row_id`` at least).
    eval_splits: ``{'valid': columns, 'test': columns}`` for a task selected
      on valid; empty for a task that only trains (pretraining).
    feature_map: the run's FeatureMap (written to ``feature_map.json``).
    extra: anything else the task keeps (tokenizer, prepared data ...).
  """
  train: Columns
  eval_splits: dict[str, Columns]
  feature_map: Any
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)


class Task:
  """Base class: the defaults of a single-model, BCE-style task.

  Subclasses set ``name`` and implement at least ``load_data``,
  ``build_model``, ``example_batch``, ``init_variables`` and ``data_loss``.
  The CTR tasks derive from ``flip_jax.train.ctr_task.BaseCtrTask``, which
  implements all but the first two; the evaluation metrics are the loop's
  (``evaluate.split_metrics`` of the named probabilities ``predict``
  returns).
  """
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

  def __init__(self, config):
    self.config = config
    self.model: nn.Module | None = None

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

  # ------------------------------------------------------------------ data
  def load_data(self, workdir: str) -> TaskData:
    raise NotImplementedError

  def batch_transform(self, data: TaskData):
    """Host-side ``fn(batch, *, seed, epoch, index) -> batch`` or None.

    Applied by the input pipeline to every training batch (picklable: grain
    workers run it); ``index`` holds the rows' positions in ``data.train``.
    """
    del data
    return None

  def eval_transform(self, data: TaskData):
    """Host-side ``fn(batch, *, seed, epoch, index) -> batch`` or None for
    evaluation batches (``seed`` and ``epoch`` are None: it must be
    deterministic), e.g. gathering per-row windows that the split stores
    as offsets."""
    del data
    return None

  def train_keys(self, data: TaskData) -> tuple[str, ...]:
    """Batch keys the train step reads (everything else stays on host)."""
    raise NotImplementedError

  def eval_keys(self, data: TaskData) -> tuple[str, ...]:
    """Batch keys ``predict`` reads."""
    raise NotImplementedError

  # ----------------------------------------------------------------- model
  def build_model(self, data: TaskData) -> nn.Module:
    raise NotImplementedError

  def example_batch(self, data: TaskData, n: int) -> dict[str, np.ndarray]:
    """A host batch of ``n`` rows with the real shapes (init, eval_shape)."""
    raise NotImplementedError

  def consts(self, data: TaskData) -> dict[str, np.ndarray]:
    """Replicated model constants passed to every step (default none)."""
    del data
    return {}

  def init_variables(self, rng, example, consts):
    """rng -> boxed variables (``model.init``); traced once."""
    raise NotImplementedError

  def post_init(self, params, model_state, put: Placer, data: TaskData):
    """Fresh params of a run started from scratch -> (params, model_state).

    E.g. pretrained PLM weights or a bias from the data. Not called on
    resume or with ``ckpt.init_from`` (whose params win).
    """
    del put, data
    return params, model_state

  def describe_init(self) -> str:
    """What ``post_init`` did, for the log and results ('scratch')."""
    return "scratch"

  # ------------------------------------------------------------------ loss
  def loss_norms(self, batch) -> Any:
    """Denominators of the loss means over the whole (global) batch.

    Micro-batches divide their summed terms by these, so that the
    micro-batches' shares add up to the global batch's loss.
    """
    del batch
    return None

  def data_loss(self, params, model_state, batch, consts, rngs, norms=None):
    """The data terms of the loss.

    Args:
      params, model_state: the model's variables.
      batch: the global batch (``norms`` None) or one micro-batch.
      consts: ``consts()`` placed on the devices.
      rngs: {stream: typed key}.
      norms: None, or ``loss_norms`` of the global batch (micro-batch mode:
        return this micro-batch's share of the global loss).

    Returns:
      (loss, (metrics dict of scalars, new model_state)).
    """
    raise NotImplementedError

  def param_loss(self, params):
    """Terms of the params alone (explicit L2): (loss or None, metrics)."""
    del params
    return None, {}

  def step_metrics(self, params, model_state, metrics: dict) -> dict:
    """Metrics read from the params once per step (e.g. a mixing weight)."""
    del params, model_state
    return metrics

  def grads(self, params, model_state, batch, consts, rngs, *,
            micro_batches: int):
    """(metrics, grads, new model_state) of the loss on the global batch.

    The default differentiates ``data_loss`` + ``param_loss``; with
    ``micro_batches`` > 1 the data terms are accumulated over strided
    micro-batches (each with its own fold of the step keys) and the param
    terms added once.
    """
    if micro_batches <= 1:
      def loss_fn(p):
        total, (metrics, ms) = self.data_loss(p, model_state, batch, consts,
                                              rngs)
        reg, reg_metrics = self.param_loss(p)
        if reg is not None:
          total = total + reg
        metrics = {**metrics, **reg_metrics, "loss": total}
        return total, (metrics, ms)
      (_, (metrics, ms)), grads = jax.value_and_grad(
          loss_fn, has_aux=True)(params)
      return self.step_metrics(params, ms, metrics), grads, ms

    norms = self.loss_norms(batch)

    def chunk(p, ms, mb, i):
      r = {k: jax.random.fold_in(v, i) for k, v in rngs.items()}
      total, (metrics, ms) = self.data_loss(p, ms, mb, consts, r, norms)
      return total, ({**metrics, "data_loss": total}, ms)

    metrics, grads, ms = microbatch.accumulate(
        chunk, params, microbatch.split(batch, micro_batches), micro_batches,
        state=model_state or {})
    (reg, reg_metrics), reg_grads = jax.value_and_grad(
        lambda p: _zero_if_none(self.param_loss(p)), has_aux=True)(params)
    if reg_metrics:
      grads = jax.tree.map(jnp.add, grads, reg_grads)
      metrics.update(reg_metrics)
    metrics["loss"] = metrics.pop("data_loss") + (reg if reg_metrics else 0.0)
    return self.step_metrics(params, ms, metrics), grads, ms

  # ------------------------------------------------------------ evaluation
  def predict(self, variables, batch) -> dict[str, jax.Array]:
    """Named probabilities of a batch: ``prob`` (+ ``<name>_prob``)."""
    raise NotImplementedError

  def monitor_batch(self, data: TaskData) -> dict[str, np.ndarray] | None:
    """A fixed held-out host batch scored at every log step (None: none)."""
    del data
    return None

  def monitor(self, variables, batch, consts) -> dict[str, jax.Array]:
    """Scalars of the model on ``monitor_batch`` in eval mode (traced; the
    loop logs them as ``heldout/<name>``)."""
    raise NotImplementedError

  def results(self, variables) -> dict[str, Any]:
    """Task-specific entries of ``results.json`` from the best variables."""
    del variables
    return {}


def _zero_if_none(out):
  loss, metrics = out
  if loss is None:
    return jnp.zeros((), jnp.float32), {}
  return loss, metrics


def apply_train(model, params, model_state, *args, **kwargs):
  """``model.apply`` in training mode (see ``state.apply_train``)."""
  return state_lib.apply_train(model, params, model_state, *args, **kwargs)
