"""An ID-based CTR backbone trained from scratch, as a task (FLIP.md 3, 10).

Any backbone of the zoo (``model.ctr.name``: DCNv2, DeepFM, AutoInt, ...)
as a ``CTRClassifier`` over the ``ids`` fields; BCE (``loss.reduction`` sum
or mean) plus an explicit L2 term (``loss.l2_preset`` coefficients times
``loss.l2_scale``); selected on valid AUC with the test split evaluated once
by the shared loop, which gives it checkpoints, resume and TensorBoard.
"""
from __future__ import annotations

import numpy as np
from absl import logging

from flip_jax.data import pipeline
from flip_jax.data import prepare
from flip_jax.models import ctr as ctr_lib
from flip_jax.train import ctr_task
from flip_jax.train import runtime
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


class CtrTask(ctr_task.BaseCtrTask):
  """The ID model alone, from scratch."""
  name = "ctr"

  def config_errors(self):
    errors = super().config_errors()
    c = self.config
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
    return self.task_data(
        {k: pipeline.ctr_split_columns(v, fm.field_names, KEYS)
         for k, v in prepared.splits.items()}, fm)

  def model_keys(self):
    return KEYS

  def model_inputs(self, batch):
    return batch["ids"]

  def build_model(self, data):
    fm = data.feature_map
    cfg = ctr_lib.CTRConfig.from_config(self.config.model.ctr,
                                        fm.num_features, fm.num_fields)
    logging.info("model %s: rep_dim %d, N=%d, F=%d", cfg.name,
                 ctr_lib.rep_dim(cfg), fm.num_features, fm.num_fields)
    self.model = ctr_lib.CTRClassifier(cfg)
    return self.model

  def l2_coefficients(self):
    """``loss.l2_preset``'s coefficients times ``loss.l2_scale``."""
    return {k: v * self.config.loss.l2_scale
            for k, v in ctr_lib.preset(self.config.loss.l2_preset).items()}

  def post_init(self, params, model_state, put, data):
    coeffs = self.l2_coefficients()
    logging.info("l2 on %s; patterns matching nothing: %s",
                 ctr_lib.l2_coefficients(params, coeffs),
                 ctr_lib.unmatched_patterns(params, coeffs))
    return params, model_state, "scratch"

  def results(self, variables):
    return {"model": self.config.model.ctr.name,
            "recipe": self.config.recipe}
