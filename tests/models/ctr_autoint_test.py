"""AutoInt's interacting layer against a numpy transcription (FLIP.md 3.4)."""
import jax
import numpy as np
import pytest
from flax import linen as nn

from flip_jax.models.ctr import autoint


def _np_layer(p, x, heads, use_res, scaling):
  b, f, e = x.shape
  d = e // heads
  q, k, v = (x @ p[n] for n in ("W_query", "W_key", "W_value"))
  out = np.zeros_like(x)
  for h in range(heads):
    sl = slice(h * d, (h + 1) * d)
    s = np.einsum("bid,bjd->bij", q[..., sl], k[..., sl])
    if scaling:
      s = s / np.sqrt(d)
    a = np.exp(s - s.max(-1, keepdims=True))
    a = a / a.sum(-1, keepdims=True)
    out[..., sl] = a @ v[..., sl]
  if use_res:
    out = out + x @ p["W_res"]
  return np.maximum(out, 0)


@pytest.mark.parametrize("use_res,scaling", [(True, False), (False, True)])
def test_interacting_layer_matches_numpy(use_res, scaling):
  x = np.random.RandomState(0).randn(2, 5, 8)
  layer = autoint.InteractingLayer(heads=2, use_res=use_res, scaling=scaling,
                                   init_std=0.5)
  p = nn.meta.unbox(layer.init(jax.random.key(0), x.astype(np.float32)))
  got = layer.apply(p, x.astype(np.float32))
  pn = {k: np.asarray(v, np.float64) for k, v in p["params"].items()}
  assert set(pn) == {"W_query", "W_key", "W_value"} | (
      {"W_res"} if use_res else set())
  np.testing.assert_allclose(got, _np_layer(pn, x, 2, use_res, scaling),
                             rtol=1e-4, atol=1e-5)


def test_attention_init_std():
  layer = autoint.InteractingLayer(heads=2)
  x = np.zeros((1, 4, 32), np.float32)
  p = nn.meta.unbox(layer.init(jax.random.key(0), x))["params"]
  w = np.concatenate([np.ravel(v) for v in p.values()])
  assert abs(w.std() - 0.05) < 4 * 0.05 / np.sqrt(2 * w.size)
