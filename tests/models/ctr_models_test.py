"""Shapes, rep sizes, gradients, encode-only params, L2: every backbone."""
import dataclasses

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest
from flax import linen as nn

from flip_jax.models import ctr
from flip_jax.models.ctr import fm

N, F, E = 64, 8, 32
# Small hidden layers keep the tests fast; the last width (128) sets D_r.
SMALL = dict(dnn_hidden=(16, 128), low_rank=8, cin_layers=(8, 4),
             afn_ltl_hidden=8)
EXPECTED_REP = {
    "dcnv2": F * E + 128, "dcnv2_full": F * E + 128, "dcn": F * E + 128,
    "deepfm": 129, "fm": E, "afm": E, "autoint": F * E + 128, "dnn": 128,
    # xDeepFM: CIN (8, 4) split-half -> 8 // 2 + 4 feature maps.
    "widedeep": 128, "pnn": 128, "xdeepfm": 8 // 2 + 4 + 128,
    "afn": 128,
}


def _cfg(name, **kw):
  return ctr.CTRConfig(name=name, num_features=N, num_fields=F, embed_dim=E,
                       **{**SMALL, **kw})


def _ids(batch=4, seed=0):
  return jnp.asarray(np.random.RandomState(seed).randint(0, N, (batch, F)),
                     jnp.int32)


def test_registry_is_complete():
  assert set(EXPECTED_REP) == set(ctr.CTR_MODELS)


def test_default_rep_dims_match_the_spec():
  for name, want in (("dcnv2", 384), ("deepfm", 129),
                     ("autoint", F * 32 + 128)):
    cfg = ctr.CTRConfig(name=name, num_features=N, num_fields=8)
    assert ctr.rep_dim(cfg) == want
  cfg = ctr.CTRConfig(name="dcnv2", num_features=N, num_fields=15)
  assert ctr.rep_dim(cfg) == 608
  cfg = ctr.CTRConfig(name="xdeepfm", num_features=N, num_fields=8)
  assert ctr.rep_dim(cfg) == 256 // 2 + 128 + 128


@pytest.mark.parametrize("name", sorted(EXPECTED_REP))
def test_shapes_grads_and_encode_params(name):
  cfg = _cfg(name)
  ids = _ids()
  model = ctr.CTRClassifier(cfg)
  variables = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), ids))
  out = jax.jit(model.apply)(variables, ids)
  assert out["ctr/rep"].shape == (4, EXPECTED_REP[name])
  assert ctr.rep_dim(cfg) == EXPECTED_REP[name]
  assert out["ctr/logit"].shape == out["logit"].shape == (4,)
  np.testing.assert_allclose(out["logit"], out["ctr/logit"])  # bias init 0
  params = variables["params"]
  assert params["out_bias"].shape == ()
  assert "table" in params["ctr"]["embedding"]
  has_bn = "batch_stats" in variables
  assert has_bn == (name == "afn")

  # logit = linear + w . rep (or the documented fixed-head variants).
  backbone = ctr.build(cfg)
  bvars = {k: v["ctr"] for k, v in variables.items()}
  # Jitted like the classifier above (one program, not an op-by-op pass).
  # The two programs still fuse FM's cancelling sums (square of sums minus
  # sum of squares) differently, so entries near 0 carry float32 rounding
  # of the representation's scale: the slack is relative to that scale.
  rep = jax.jit(lambda v, x: backbone.apply(v, x, method=backbone.encode))(
      bvars, ids)
  np.testing.assert_allclose(rep, out["ctr/rep"], rtol=1e-6,
                             atol=1e-6 * float(np.abs(rep).max()))
  bp = jax.tree.map(np.asarray, bvars["params"])
  lin = (bp["linear"]["table"][np.asarray(ids), 0].sum(-1)
         if backbone.use_linear else 0.0)
  if name == "fm":
    want = lin + np.asarray(rep).sum(-1)
  elif name == "deepfm":
    r = np.asarray(rep)
    want = lin + r[:, 0] + r[:, 1:] @ bp["head"]["kernel"][:, 0]
  else:
    want = lin + np.asarray(rep) @ bp["head"]["kernel"][:, 0]
  np.testing.assert_allclose(out["ctr/logit"], want, rtol=2e-5, atol=1e-7)

  # Finite, non-zero gradients through a training-mode BCE loss.
  labels = jnp.asarray([0.0, 1.0, 1.0, 0.0])

  def loss_fn(p):
    v = {**variables, "params": p}
    o, _ = model.apply(v, ids, deterministic=False, mutable=["batch_stats"])
    z = o["logit"]
    return jnp.mean(jnp.maximum(z, 0) - z * labels
                    + jnp.log1p(jnp.exp(-jnp.abs(z))))

  grads = jax.jit(jax.grad(loss_fn))(params)
  leaves = jax.tree.leaves(grads)
  assert all(np.all(np.isfinite(g)) for g in leaves)
  assert float(np.abs(grads["out_bias"])) > 0
  assert float(np.abs(grads["ctr"]["embedding"]["table"]).sum()) > 0

  # encode creates only encoder params: no linear table, no head.
  enc = backbone.init(jax.random.key(1), ids, method=backbone.encode)
  enc_paths = set(ctr.flat_params(enc["params"]))
  assert not any(p.startswith(("linear/", "head/")) for p in enc_paths)
  full_paths = set(ctr.flat_params(bvars["params"]))
  extra = {p.split("/")[0] for p in full_paths - enc_paths}
  want_extra = ({"linear"} if backbone.use_linear else set()) | (
      {"head"} if name != "fm" else set())
  assert extra == want_extra
  assert enc_paths <= full_paths


def test_encode_params_feed_the_full_model():
  """Pretraining params (encode) + fresh linear/head = a working model."""
  cfg, ids = _cfg("dcnv2"), _ids()
  m = ctr.build(cfg)
  enc = nn.meta.unbox(m.init(jax.random.key(0), ids, method=m.encode))["params"]
  full = nn.meta.unbox(m.init(jax.random.key(1), ids))["params"]
  merged = {**full, **enc}
  np.testing.assert_allclose(m.apply({"params": merged}, ids)["ctr/rep"],
                             m.apply({"params": enc}, ids, method=m.encode))


def test_fm_pairwise_equals_double_sum():
  emb = np.random.RandomState(0).randn(3, 5, 4).astype(np.float32)
  want = np.zeros((3,))
  for i in range(5):
    for j in range(i + 1, 5):
      want += (emb[:, i] * emb[:, j]).sum(-1)
  got = np.asarray(fm.fm_vector(jnp.asarray(emb))).sum(-1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bad_ids_are_rejected():
  m = ctr.build(_cfg("dcnv2"))
  with pytest.raises(ValueError, match="expected shape"):
    m.init(jax.random.key(0), jnp.zeros((4, F + 1), jnp.int32))
  with pytest.raises(ValueError, match="integer"):
    m.init(jax.random.key(0), jnp.zeros((4, F), jnp.float32))


def test_config_from_configdict_and_errors():
  cd = mlc.ConfigDict({"name": "autoint", "embed_dim": 16,
                       "dnn_hidden": [8, 8], "att_heads": 4})
  cfg = ctr.CTRConfig.from_config(cd, num_features=10, num_fields=3)
  assert cfg.dnn_hidden == (8, 8) and cfg.num_fields == 3
  with pytest.raises(ValueError, match="unknown keys"):
    ctr.CTRConfig.from_config({"name": "dcnv2", "embdim": 3}, 10, 3)
  with pytest.raises(ValueError, match="feature map"):
    ctr.CTRConfig.from_config({"name": "dcnv2", "num_fields": 3}, 10, 3)
  with pytest.raises(ValueError, match="att_heads"):
    ctr.CTRConfig(name="autoint", num_features=10, num_fields=3, att_heads=5)
  with pytest.raises(ValueError, match="unknown CTR model"):
    ctr.build(dataclasses.replace(cfg, name="nope"))


def test_l2_penalty_presets():
  cfg, ids = _cfg("dcnv2"), _ids()
  params = nn.meta.unbox(
      ctr.CTRClassifier(cfg).init(jax.random.key(0), ids)["params"])
  flat = {k: np.asarray(v, np.float64)
          for k, v in ctr.flat_params(params).items()}
  sq = lambda k: float((flat[k] ** 2).sum())
  got = float(ctr.l2_penalty(params, ctr.preset("flip_id")))
  want = 1e-3 * (sq("ctr/embedding/table") + sq("ctr/linear/table"))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  coeffs = ctr.l2_coefficients(params, ctr.preset("ctr_base"))
  cross = {f"ctr/cross/{m}_{l}" for m in "UVC" for l in (0, 1)}
  assert set(coeffs) == {"ctr/embedding/table", "ctr/linear/table",
                         "ctr/head/kernel"} | cross
  got = float(ctr.l2_penalty(params, ctr.preset("ctr_base")))
  np.testing.assert_allclose(got, 1e-5 * sum(sq(k) for k in coeffs), rtol=1e-5)
  assert ctr.unmatched_patterns(params, ctr.preset("ctr_base")) == [
      r"(^|/)cross/kernel_\d+$"]
  # First match wins; lambda 0 excludes.
  assert not ctr.l2_coefficients(params, {"embedding": 0.0, ".*": 1.0}).get(
      "ctr/embedding/table")
  with pytest.raises(ValueError, match="invalid"):
    ctr.l2_penalty(params, {"(": 1.0})
  with pytest.raises(ValueError, match="unknown l2 preset"):
    ctr.preset("nope")
