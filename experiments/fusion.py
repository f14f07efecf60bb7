"""The fusion bound: the best mix of two finished models' logits.

A logistic regression on the valid-split logits of two finetuned models
(FLIP_ID and FLIP_PLM; the ID model and PLM-only), fitted on valid and
scored on test once. It answers whether any linear mix of the two branches
beats the ID model: if it does and the joint model does not, "joint < ID"
is the joint model's optimisation (alpha's reach, the shared budget), not
the data; if no mix does, the text branch adds nothing the ID model lacks
at this budget.

Each bound is written like a finetuning run (``<stage>/results.json``, with
the runs it mixes as ``inputs``) so the report reads it as a row.
"""
from __future__ import annotations

import os

import numpy as np

from flip_jax import jsonio
from flip_jax import metrics as metrics_lib
from flip_jax.train import run_files

# stage -> (the two finetuning stages mixed).
PAIRS = {"fusion_flip": ("flip_id", "flip_plm"),
         "fusion_base": ("base_id", "base_plm")}
# L2 on the standardised weights (not the intercept): a nudge against
# separable valid sets, far below what moves a 10,000-row fit.
L2 = 1e-4


def _logit(p: np.ndarray) -> np.ndarray:
  p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
  return np.log(p) - np.log1p(-p)


def predictions(run_dir: str) -> dict[str, dict[str, np.ndarray]]:
  """{'valid' / 'test': {row_id, label, prob, ...}} of a finished run: its
  ``predictions.npz``, or (a run older than that file) scored again from its
  best checkpoint and saved there."""
  path = os.path.join(run_dir, run_files.PREDICTIONS)
  if not os.path.exists(path):
    from experiments import scoring  # pylint: disable=g-import-not-at-top
    preds, _ = scoring.score_splits(run_dir, ("valid", "test"))
    run_files.write_predictions(path, preds)
  with np.load(path) as z:
    out: dict[str, dict[str, np.ndarray]] = {}
    for key in z.files:
      split, name = key.split("/", 1)
      out.setdefault(split, {})[name] = z[key]
  return out


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = L2,
                 iters: int = 50) -> tuple[np.ndarray, float, np.ndarray,
                                           np.ndarray]:
  """Logistic regression by Newton's method on standardised columns.

  Returns:
    (weights, intercept, column means, column scales): predict with
    ``((x - mean) / scale) @ w + b``.
  """
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  mean, scale = x.mean(0), x.std(0) + 1e-12
  z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
  w = np.zeros(z.shape[1])
  reg = np.full(z.shape[1], l2 * len(x))
  reg[-1] = 0.0
  for _ in range(iters):
    p = 1.0 / (1.0 + np.exp(-(z @ w)))
    grad = z.T @ (p - y) + reg * w
    hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(reg)
    step = np.linalg.solve(hess + 1e-9 * np.eye(len(w)), grad)
    w -= step
    if np.max(np.abs(step)) < 1e-10:
      break
  return w[:-1], float(w[-1]), mean, scale


def bound(dir_a: str, dir_b: str) -> dict:
  """The fusion bound of two runs: fitted on valid, test scored once."""
  pa, pb = predictions(dir_a), predictions(dir_b)
  out = {}
  for split in ("valid", "test"):
    if not np.array_equal(pa[split]["row_id"], pb[split]["row_id"]):
      raise ValueError(f"fusion: {dir_a} and {dir_b} scored other "
                       f"{split} rows")
  cols = {s: np.stack([_logit(pa[s]["prob"]), _logit(pb[s]["prob"])], 1)
          for s in ("valid", "test")}
  w, b, mean, scale = fit_logistic(cols["valid"], pa["valid"]["label"])
  for split in ("valid", "test"):
    prob = 1.0 / (1.0 + np.exp(-(((cols[split] - mean) / scale) @ w + b)))
    y = pa[split]["label"]
    out[f"{split}/auc"] = float(metrics_lib.auc(y, prob))
    out[f"{split}/logloss"] = float(metrics_lib.logloss(y, prob))
  # The weights on the raw logits: prob = sigmoid(w_a z_a + w_b z_b + c).
  raw = w / scale
  out.update(weights=[float(v) for v in raw],
             intercept=float(b - np.sum(raw * mean)))
  return out


def run_stage(folder: str, stage: str) -> dict | None:
  """Writes ``<folder>/<stage>/results.json`` (None when an input run is
  missing: the bound needs both)."""
  a, b = (os.path.join(folder, s) for s in PAIRS[stage])
  if not all(os.path.exists(os.path.join(d, run_files.RESULTS))
             for d in (a, b)):
    return None
  res = bound(a, b)
  seed = jsonio.read_json(os.path.join(a, run_files.RESULTS)).get("seed")
  res.update(task="fusion", inputs=[a, b], seed=seed, best_step="fit",
             steps=None, stopped="valid fit",
             fit=f"logistic regression on the valid logits of "
                 f"{PAIRS[stage][0]} and {PAIRS[stage][1]}")
  out = os.path.join(folder, stage)
  os.makedirs(out, exist_ok=True)
  jsonio.write_json_atomic(os.path.join(out, run_files.RESULTS), res)
  return res
