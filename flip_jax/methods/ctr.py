"""An ID-based CTR backbone trained from scratch, as a task (FLIP.md 3, 10).

Any backbone of the zoo (``model.ctr.name``: DCNv2, DeepFM, AutoInt, ...)
as a ``CTRClassifier`` over the ``ids`` fields; BCE (``loss.reduction`` sum
or mean) plus an explicit L2 term (``loss.l2_preset`` coefficients times
``loss.l2_scale``); selected on valid AUC with the test split evaluated once
by the shared loop, which gives it checkpoints, resume and TensorBoard.
"""
from __future__ import annotations

import jax
import numpy as np
from absl import logging

from flip_jax import losses
from flip_jax.data import pipeline
from flip_jax.data import prepare
from flip_jax.models import ctr as ctr_lib
from flip_jax.train import runtime
from flip_jax.train import task as task_lib
from flip_jax.train import validate

KEYS = ("ids",)


def check_split(name: str, cols, num_features: int, num_fields: int):
  """Validates a split's ids/labels with messages naming split and field."""
  for key in ("ids", "label"):
    if key not in cols:
      raise ValueError(f"data split {name!r}: missing column {key!r}")
  ids, label = cols["ids"], cols["label"]
  if ids.ndim != 2 or ids.shape[1] != num_fields:
    raise ValueError(f"data split {name!r}: ids shape {ids.shape}, expected "
                     f"[n, {num_fields}]")
  if ids.shape[0] == 0:
    raise ValueError(f"data split {name!r}: no rows")
  bad = (ids < 0) | (ids >= num_features)
  if bad.any():
    r, f = np.argwhere(bad)[0]
    raise ValueError(f"data split {name!r}: row {r} field {f} has id "
                     f"{ids[r, f]} outside [0, {num_features})")
  if not np.isin(label, (0.0, 1.0)).all():
    raise ValueError(f"data split {name!r}: labels must be 0/1")


class CtrTask(task_lib.Task):
  """The ID model alone, from scratch."""
  name = "ctr"

  def config_errors(self):
    errors: list[str] = []
    c = self.config
    validate.one_of(errors, "loss.reduction", c.loss.reduction,
                    ("sum", "mean"))
    validate.one_of(errors, "loss.l2_preset", c.loss.l2_preset,
                    tuple(ctr_lib.L2_PRESETS))
    validate.one_of(errors, "model.ctr.name", c.model.ctr.name,
                    tuple(ctr_lib.CTR_MODELS))
    return errors

  def load_data(self, workdir):
    config = self.config
    prepared = runtime.main_process_first(
        lambda: prepare.load_dataset(
            config.data, prepare.default_cache_root(config.data, workdir)),
        "data")
    fm = prepared.feature_map
    for split in ("train", "test"):
      if split not in prepared.splits:
        raise ValueError(f"data: split {split!r} missing (protocol "
                         f"{config.data.protocol!r}); the ctr task needs it")
    for split, cols in prepared.splits.items():
      check_split(split, cols, fm.num_features, fm.num_fields)
    splits = {k: pipeline.ctr_split_columns(v, fm.field_names, KEYS)
              for k, v in prepared.splits.items()}
    return task_lib.TaskData(
        train=splits["train"],
        eval_splits={k: v for k, v in splits.items() if k != "train"},
        feature_map=fm)

  def train_keys(self, data):
    return KEYS + ("label", "weight")

  def eval_keys(self, data):
    return KEYS

  def build_model(self, data):
    fm = data.feature_map
    cfg = ctr_lib.CTRConfig.from_config(self.config.model.ctr,
                                        fm.num_features, fm.num_fields)
    logging.info("model %s: rep_dim %d, N=%d, F=%d", cfg.name,
                 ctr_lib.rep_dim(cfg), fm.num_features, fm.num_fields)
    self.model = ctr_lib.CTRClassifier(cfg)
    self._coeffs = {k: v * self.config.loss.l2_scale
                    for k, v in ctr_lib.preset(
                        self.config.loss.l2_preset).items()}
    return self.model

  def example_batch(self, data, n):
    return {"ids": np.asarray(data.train["ids"][:n])}

  def init_variables(self, rng, example, consts):
    return self.model.init({"params": rng, "dropout": rng}, example["ids"])

  def post_init(self, params, model_state, put, data):
    logging.info("l2 on %s; patterns matching nothing: %s",
                 ctr_lib.l2_coefficients(params, self._coeffs),
                 ctr_lib.unmatched_patterns(params, self._coeffs))
    return params, model_state

  def loss_norms(self, batch):
    if self.config.loss.reduction == "sum":
      return jax.numpy.ones((), jax.numpy.float32)
    return losses.weight_denominator(batch["weight"])

  def data_loss(self, params, model_state, batch, consts, rngs, norms=None):
    reduction = self.config.loss.reduction
    if reduction not in ("sum", "mean"):
      raise ValueError(f"loss.reduction {reduction!r}: expected sum|mean")
    out, model_state = task_lib.apply_train(
        self.model, params, model_state, batch["ids"], deterministic=False,
        rngs=rngs)
    scale = 1.0 if norms is None else 1.0 / norms
    bce = scale * losses.bce_with_logits(
        out["logit"], batch["label"], batch["weight"],
        reduction=reduction if norms is None else "sum")
    return bce, ({"bce": bce}, model_state)

  def param_loss(self, params):
    l2 = ctr_lib.l2_penalty(params, self._coeffs)
    return l2, {"l2": l2}

  def predict(self, variables, batch):
    out = self.model.apply(variables, batch["ids"], deterministic=True)
    return {"prob": jax.nn.sigmoid(out["logit"].astype(jax.numpy.float32))}

  def results(self, variables):
    return {"model": self.config.model.ctr.name,
            "recipe": self.config.recipe}
