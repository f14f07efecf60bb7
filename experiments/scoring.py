"""Scoring a finished finetuning run's splits with its best checkpoint.

Shared by ``experiments.predict`` (one split to a file) and the fusion
bound (``experiments.fusion``: valid and test predictions of runs written
before the loop saved ``predictions.npz``).
"""
from __future__ import annotations

import numpy as np

def score_splits(workdir: str, splits, *, batch_size: int = 256,
                 data_overrides: dict | None = None
                 ) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
  """({split: named predictions in row order}, {split: metrics}) of any
  method's finished run (`flip_jax.train.reload`).

  The predictions hold ``row_id``, ``label``, ``prob`` and every branch's
  ``<name>_prob`` (the joint model's ``ctr_prob`` / ``txt_prob``).
  """
  from flip_jax.train import reload  # pylint: disable=g-import-not-at-top
  run = reload.load_run(workdir, data_overrides=data_overrides)
  return reload.predict_splits(run, splits, batch_size=batch_size)
