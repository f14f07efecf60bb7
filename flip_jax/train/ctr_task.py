"""The CTR task family: what every task that predicts a click shares.

A CTR task (the ID model from scratch, FLIP finetuning, CTR-BERT,
ClickPrompt finetuning, SRP4CTR) trains a model whose output holds a
``logit`` (and, for models with two branches, ``ctr/logit`` and
``txt/logit``) with BCE, selected on valid AUC. ``BaseCtrTask`` owns what they
share, each written once:

* the data contract: ``task_data`` fills ``TaskData.train_keys`` and
  ``eval_keys`` from one ``model_keys``; the example batch and the default
  init from them;
* the loss (``loss_task.LossTask``'s hooks): BCE of ``logit`` with
  ``loss.reduction`` (``sum`` or ``mean``), its micro-batch share
  (``loss_norms``: the global batch's denominator), auxiliary BCE terms on
  named branch logits (``aux_logits``), and an explicit L2 term on the
  params matching ``l2_coefficients``;
* ``predict``: ``prob`` of ``logit`` and ``<branch>_prob`` of each branch
  when the model has both.

A subclass keeps only what differs: its data, its model, its post-init,
its config errors and its results entries.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from flip_jax import losses
from flip_jax.models import ctr as ctr_lib
from flip_jax.train import loss_task
from flip_jax.train import state as state_lib
from flip_jax.train import task as task_lib
from flip_jax.train import validate

# Branch logits of a two-branch model -> the name of their probability.
BRANCHES = {"ctr/logit": "ctr_prob", "txt/logit": "txt_prob"}
REDUCTIONS = ("sum", "mean")
# Batch keys the CTR loss reads besides the model's.
LABEL_KEYS = ("label", "weight")


class BaseCtrTask(loss_task.LossTask):
  """Base of the CTR tasks: BCE on ``logit``, selected on valid AUC.

  Subclasses implement ``load_data`` (returning ``task_data(...)``),
  ``build_model`` and ``model_keys`` and override the small hooks below
  where they differ.
  """

  # ------------------------------------------------------------- the hooks
  def model_keys(self) -> tuple[str, ...]:
    """Batch keys the model reads (training adds ``LABEL_KEYS``)."""
    raise NotImplementedError

  def model_inputs(self, batch):
    """The model's positional input built from a batch (default: the
    batch itself; the plain ID model takes the ``ids`` array)."""
    return batch

  def reduction(self) -> str:
    """BCE reduction over the batch: ``loss.reduction``."""
    return self.config.loss.reduction

  def aux_logits(self) -> tuple[tuple[str, ...], float]:
    """(branch logits with an auxiliary BCE term, its weight); none by
    default."""
    return (), 0.0

  def l2_coefficients(self) -> dict[str, float] | None:
    """{param path regex: L2 coefficient} of the explicit L2 term, or None
    for none."""
    return None

  # ------------------------------------------------------ the shared parts
  def config_errors(self):
    errors: list[str] = []
    validate.one_of(errors, "loss.reduction", self.reduction(), REDUCTIONS)
    return errors

  def task_data(self, splits: Mapping[str, Any], feature_map,
                extra: dict | None = None, *,
                transform: task_lib.Transform | None = None
                ) -> task_lib.TaskData:
    """TaskData of prepared splits: ``train`` trains, the others evaluate;
    the step reads ``model_keys`` + ``LABEL_KEYS``, ``predict``
    ``model_keys``. ``transform`` (deterministic) is applied to training
    and evaluation batches alike."""
    keys = tuple(self.model_keys())
    return task_lib.TaskData(
        train=splits["train"],
        eval_splits={k: v for k, v in splits.items() if k != "train"},
        feature_map=feature_map, extra=dict(extra or {}),
        train_keys=keys + LABEL_KEYS, eval_keys=keys,
        batch_transform=transform, eval_transform=transform)

  def example_batch(self, data, n):
    return {k: np.asarray(data.train[k][:n]) for k in self.model_keys()}

  def init_variables(self, rng, example, consts):
    del consts
    return self.model.init({"params": rng, "dropout": rng},
                           self.model_inputs(example))

  def loss_norms(self, batch):
    if self.reduction() == "sum":
      return jnp.ones((), jnp.float32)
    return losses.weight_denominator(batch["weight"])

  def data_loss(self, params, model_state, batch, consts, rngs, norms=None):
    """BCE of ``logit`` (+ the weighted BCE of ``aux_logits``).

    norms=None: the configured reduction over ``batch``; otherwise its
    share of the global batch's loss (its summed terms over ``norms``).
    """
    del consts
    out, model_state = state_lib.apply_train(
        self.model, params, model_state, self.model_inputs(batch),
        deterministic=False, rngs=rngs)
    y, w = batch["label"], batch["weight"]
    red = self.reduction() if norms is None else "sum"
    scale = 1.0 if norms is None else 1.0 / norms

    def bce(logit):
      return losses.bce_with_logits(logit, y, w, reduction=red)

    main = scale * bce(out["logit"])
    total = main
    names, weight = self.aux_logits()
    if names:
      aux = bce(out[names[0]])
      for name in names[1:]:
        aux = aux + bce(out[name])
      total = total + weight * (scale * aux)
    return total, ({"bce": main}, model_state)

  def param_loss(self, params):
    coeffs = self.l2_coefficients()
    if coeffs is None:
      return None, {}
    l2 = ctr_lib.l2_penalty(params, coeffs)
    return l2, {"l2": l2}

  def predict(self, variables, batch):
    out = self.model.apply(variables, self.model_inputs(batch),
                           deterministic=True)
    probs = {"prob": jax.nn.sigmoid(out["logit"].astype(jnp.float32))}
    if all(k in out for k in BRANCHES):
      for key, name in BRANCHES.items():
        probs[name] = jax.nn.sigmoid(out[key].astype(jnp.float32))
    return probs
