"""DCNv2 cross networks against direct numpy transcriptions; init stds."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from flip_jax.models import ctr
from flip_jax.models import layers
from flip_jax.models.ctr import dcnv2


def _np_cross_mix(p, x0, num_layers, num_experts):
  """Per-expert loop, as written in FLIP.md 3.2 (torch column vectors)."""
  x0 = x0.astype(np.float64)
  x = x0.copy()
  for l in range(num_layers):
    u, v, c, b = (np.asarray(p[f"{n}_{l}"], np.float64)
                  for n in ("U", "V", "C", "bias"))
    out = np.zeros_like(x)
    for i in range(x.shape[0]):
      g = np.array([x[i] @ p["gates"][:, e] for e in range(num_experts)])
      g = np.exp(g - g.max()) / np.exp(g - g.max()).sum()
      for e in range(num_experts):
        h = np.tanh(v[e].T @ x[i])
        h = np.tanh(c[e] @ h)
        out[i] += g[e] * (x0[i] * (u[e] @ h + b))
    x = out + x
  return x


@pytest.mark.parametrize("layers_n", [1, 2])
def test_cross_net_mix_matches_numpy(layers_n):
  rng = np.random.RandomState(0)
  x0 = rng.randn(3, 12).astype(np.float32)
  m = dcnv2.CrossNetMix(num_layers=layers_n, num_experts=3, rank=4)
  p = nn.meta.unbox(m.init(jax.random.key(0), x0))["params"]
  # Non-zero biases so the bias path is checked too.
  p = {k: (rng.randn(*v.shape).astype(np.float32) if k.startswith("bias") else
           np.asarray(v)) for k, v in p.items()}
  got = m.apply({"params": p}, x0)
  want = _np_cross_mix(p, x0, layers_n, 3)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  names = {f"{n}_{l}" for n in ("U", "V", "C", "bias") for l in range(layers_n)}
  assert set(p) == names | {"gates"}
  assert p["U_0"].shape == p["V_0"].shape == (3, 12, 4)
  assert p["C_0"].shape == (3, 4, 4) and p["gates"].shape == (12, 3)


def test_cross_net_v2_and_vector_match_numpy():
  rng = np.random.RandomState(1)
  x0 = rng.randn(3, 6).astype(np.float32)
  full = dcnv2.CrossNetV2(num_layers=2)
  p = nn.meta.unbox(full.init(jax.random.key(0), x0))["params"]
  x = x0.astype(np.float64)
  for l in range(2):
    x = x0 * (x @ np.asarray(p[f"kernel_{l}"]) + np.asarray(p[f"bias_{l}"])) + x
  np.testing.assert_allclose(full.apply({"params": p}, x0), x, rtol=1e-5)
  vec = dcnv2.CrossNet(num_layers=2)
  p = nn.meta.unbox(vec.init(jax.random.key(0), x0))["params"]
  x = x0.astype(np.float64)
  for l in range(2):
    w, b = np.asarray(p[f"kernel_{l}"]), np.asarray(p[f"bias_{l}"])
    x = x0 * (x @ w)[:, None] + b + x
  np.testing.assert_allclose(vec.apply({"params": p}, x0), x, rtol=1e-5)


def test_dcnv2_init_stds_match_the_formulas():
  cfg = ctr.CTRConfig(name="dcnv2", num_features=512, num_fields=8,
                      dnn_hidden=(300, 300, 128))
  model = ctr.build(cfg)
  ids = jnp.zeros((2, 8), jnp.int32)
  p = nn.meta.unbox(model.init(jax.random.key(0), ids))["params"]
  d, e, r = 256, 4, 32
  std_uv, std_c = dcnv2.mix_stds(d, e, r)
  assert abs(std_uv - 0.01550) < 1e-5 and abs(std_c - 0.04167) < 1e-5
  # 4 sigma of the sample std's sampling error, sd(s) ~ s / sqrt(2n).
  def check_std(x, want):
    x = np.asarray(x, np.float64).ravel()
    tol = 4 * want / np.sqrt(2 * x.size)
    assert abs(x.std() - want) < tol, (x.std(), want, tol)
    assert abs(x.mean()) < 4 * want / np.sqrt(x.size)
  for l in range(2):
    check_std(p["cross"][f"U_{l}"], std_uv)
    check_std(p["cross"][f"V_{l}"], std_uv)
    check_std(p["cross"][f"C_{l}"], std_c)
    assert not np.any(p["cross"][f"bias_{l}"])
  # Gates: U(+-1/sqrt(D)); embedding and linear tables: N(0, 1e-4).
  g = np.asarray(p["cross"]["gates"])
  assert 0.9 / np.sqrt(d) < np.abs(g).max() <= 1 / np.sqrt(d)
  check_std(p["embedding"]["table"], 1e-4)
  check_std(p["linear"]["table"], 1e-4)
  # DNN: weights N(0, 1e-4), biases U(+-1/sqrt(fan_in)).
  check_std(p["dnn"]["dense_1"]["kernel"], layers.DNN_INIT_STD)
  b = np.asarray(p["dnn"]["dense_1"]["bias"])
  assert np.abs(b).max() <= 1 / np.sqrt(300)
  assert np.abs(b).std() > 0.4 * (1 / np.sqrt(300)) / np.sqrt(3)
  h = np.asarray(p["head"]["kernel"])
  assert h.shape == (384, 1) and np.abs(h).max() <= 1 / np.sqrt(384)


def test_dcnv2_full_and_cross_type():
  ids = jnp.zeros((2, 3), jnp.int32)
  for name, kw in (("dcnv2_full", {}), ("dcnv2", {"cross_type": "full"})):
    cfg = ctr.CTRConfig(name=name, num_features=8, num_fields=3, embed_dim=4,
                        dnn_hidden=(8,), **kw)
    p = nn.meta.unbox(ctr.build(cfg).init(jax.random.key(0), ids))["params"]
    assert set(p["cross"]) == {"kernel_0", "kernel_1", "bias_0", "bias_1"}
    assert p["cross"]["kernel_0"].shape == (12, 12)
