"""Explicit L2 penalties on named params (a loss term, not weight decay).

deepctr-torch adds sum(lambda * w^2) over selected tensors to the loss; FLIP
keeps that (FLIP.md 3.2, 6.1).  Coefficients are keyed by regexes that are
``re.search``-ed against '/'-joined param paths such as
``ctr/embedding/table`` or ``cross/U_0``; the first matching regex wins.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp

# Re-exported as ctr.flat_params (experiments/train_ctr.py and tests use it).
from flip_jax.tree_paths import flat_params

L2_PRESETS: dict[str, dict[str, float]] = {
    "none": {},
    # ctr_base.py / deepctr defaults: embeddings, linear table, dnn_linear
    # (our `head`) and cross U/V/C (or DCN / full-rank kernels) 1e-5; DNN 0.
    "ctr_base": {
        r"(^|/)embedding/table$": 1e-5,
        r"(^|/)linear/table$": 1e-5,
        r"(^|/)head/kernel$": 1e-5,
        r"(^|/)cross/(U|V|C)_\d+$": 1e-5,
        r"(^|/)cross/kernel_\d+$": 1e-5,
    },
    # finetune_ctr.py (FLIP_ID): l2_reg 1e-3 on the embedding + linear tables.
    "flip_id": {
        r"(^|/)embedding/table$": 1e-3,
        r"(^|/)linear/table$": 1e-3,
    },
}


def _compiled(coeffs: Mapping[str, float]):
  out = []
  for pattern, lam in coeffs.items():
    try:
      out.append((re.compile(pattern), float(lam)))
    except re.error as e:
      raise ValueError(
          f"l2 coefficient regex {pattern!r} is invalid: {e}") from e
  return out


def l2_coefficients(params: Any,
                    coeffs: Mapping[str, float]) -> dict[str, float]:
  """Resolves {param path: lambda} for the params some regex matches."""
  compiled = _compiled(coeffs)
  out = {}
  for path in flat_params(params):
    for rx, lam in compiled:
      if rx.search(path):
        if lam:
          out[path] = lam
        break
  return out


def unmatched_patterns(params: Any, coeffs: Mapping[str, float]) -> list[str]:
  """Regexes that match no param path (typos, or parts a model lacks)."""
  paths = list(flat_params(params))
  return [p for p in coeffs if not any(re.search(p, x) for x in paths)]


def l2_penalty(params: Any, coeffs: Mapping[str, float]) -> jax.Array:
  """sum over matched params of lambda * sum(w^2), as a float32 scalar.

  Args:
    params: the param tree (nested dict, boxed or not).
    coeffs: {regex on the '/'-joined path: lambda}.

  Returns:
    The penalty (0.0 when nothing matches).
  """
  flat = flat_params(params)
  total = jnp.zeros((), jnp.float32)
  for path, lam in l2_coefficients(params, coeffs).items():
    w = flat[path].astype(jnp.float32)
    total = total + lam * jnp.sum(w * w)
  return total


def preset(name: str) -> dict[str, float]:
  """Looks a coefficient preset up by name, with a clear error."""
  if name not in L2_PRESETS:
    raise ValueError(f"unknown l2 preset {name!r}; known: {sorted(L2_PRESETS)}")
  return dict(L2_PRESETS[name])
