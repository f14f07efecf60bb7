"""The fusion bound: a logistic regression on two runs' valid logits,
scored on test once, written as a results row with its inputs."""
import json

import numpy as np
import pytest

from experiments import budget
from experiments import fusion
from flip_jax import metrics as metrics_lib
from flip_jax.train import run_files


def test_fit_logistic_recovers_the_weights():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(20000, 2)) * [1.0, 3.0] + [0.5, -1.0]
  logit = 1.5 * x[:, 0] - 0.4 * x[:, 1] + 0.3
  y = (rng.random(len(x)) < 1 / (1 + np.exp(-logit))).astype(np.float64)
  w, b, mean, scale = fusion.fit_logistic(x, y)
  assert w / scale == pytest.approx([1.5, -0.4], abs=0.06)
  assert b - np.sum(w / scale * mean) == pytest.approx(0.3, abs=0.06)


def _run(d, z, y, seed=7):
  d.mkdir(parents=True)
  preds = {s: {"row_id": np.arange(len(y[s])), "label": y[s],
               "prob": 1 / (1 + np.exp(-z[s][:len(y[s])]))}
           for s in ("valid", "test")}
  run_files.write_predictions(str(d / run_files.PREDICTIONS), preds)
  (d / "results.json").write_text(json.dumps({"seed": seed}))


def test_the_bound_mixes_two_complementary_runs(tmp_path):
  rng = np.random.default_rng(1)
  n = 4000
  signal = {s: rng.normal(size=(n, 2)) for s in ("valid", "test")}
  y = {s: (rng.random(n) < 1 / (1 + np.exp(-v.sum(1)))).astype(np.float32)
       for s, v in signal.items()}
  # Each run sees one half of the signal (plus noise).
  _run(tmp_path / "flip_id", {s: v[:, 0] for s, v in signal.items()}, y)
  _run(tmp_path / "flip_plm", {s: v[:, 1] for s, v in signal.items()}, y)
  res = fusion.run_stage(str(tmp_path), "fusion_flip")
  one = metrics_lib.auc(y["test"], signal["test"][:, 0])
  assert res["test/auc"] > one + 0.03
  assert res["weights"] == pytest.approx([1.0, 1.0], abs=0.15)
  saved = json.loads((tmp_path / "fusion_flip" / "results.json").read_text())
  assert saved["inputs"] == [str(tmp_path / "flip_id"),
                             str(tmp_path / "flip_plm")]
  assert saved["seed"] == 7 and saved["stopped"] == "valid fit"
  # No config.json in the inputs: the budget share is unknown.
  assert budget.row_budget(str(tmp_path / "fusion_flip")) is None


def test_missing_input_writes_nothing(tmp_path):
  assert fusion.run_stage(str(tmp_path), "fusion_base") is None
  assert not (tmp_path / "fusion_base").exists()


def test_other_rows_are_refused(tmp_path):
  rng = np.random.default_rng(2)
  y = {s: rng.integers(0, 2, 50).astype(np.float32) for s in ("valid", "test")}
  z = {s: rng.normal(size=50) for s in ("valid", "test")}
  _run(tmp_path / "flip_id", z, y)
  _run(tmp_path / "flip_plm", z, {"valid": y["valid"],
                                  "test": y["test"][:40]})
  with pytest.raises(ValueError, match="other test rows"):
    fusion.run_stage(str(tmp_path), "fusion_flip")
