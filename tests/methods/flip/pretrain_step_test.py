"""FLIP pretraining model on tiny random inputs (fast / official forms, loss
weights, the MTM read-out's padding mask).

The sharded step (8 fake devices == 1 device) is in pretrain_sharded_test.py,
the pretraining options through ``steps.train_step`` in
pretrain_options_test.py; the fixtures in flip_testlib.py.
"""
import jax
import numpy as np
from flax import linen as nn

from flip_jax.methods.flip import pretrain_model as flip_lib
from tests.methods.flip import flip_testlib as fst  # pylint: disable=g-bad-import-order

B = fst.B


def subset_params(model, batch):
  """``model``'s params: its init's tree (traced, not compiled), filled with
  the values of ``full_params``."""
  c = fst.consts()
  shapes = jax.eval_shape(
      lambda: nn.meta.unbox(fst.init_boxed(model, batch, c=c)))
  params = {k: fst.tiny_params()[k] for k in shapes}
  assert (jax.tree.map(lambda x: (x.shape, x.dtype), shapes)
          == jax.tree.map(lambda x: (x.shape, x.dtype), params))
  return shapes, params


def test_fast_and_official_forms_agree():
  batch = fst.random_batch()
  fast = flip_lib.FlipPretrainModel(fst.tiny_config())
  official = flip_lib.FlipPretrainModel(
      fst.tiny_config(share_unmasked_pass=False, mlm_masked_only=False))
  params = fst.tiny_params()
  rngs = {"noise": jax.random.PRNGKey(7)}
  c = fst.consts()
  a = fst.apply(fast, params, batch, c, rngs=rngs)
  b = fst.apply(official, params, batch, c, rngs=rngs)
  for k in ("icl_loss", "mtm_loss", "mlm_loss", "loss"):
    np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
  assert float(a["mlm_masked_tokens"]) == 2 * B
  assert float(a["mlm_dropped"]) == 0
  assert np.isfinite(float(a["loss"]))


def test_total_is_weighted_sum_and_disabled_losses_skip_params():
  batch = fst.random_batch()
  c = fst.consts()
  model = flip_lib.FlipPretrainModel(fst.tiny_config(icl_weight=0.5,
                                                     mtm_weight=2.0))
  params = fst.tiny_params()
  out = fst.apply(model, params, batch, c,
                    rngs={"noise": jax.random.PRNGKey(0)})
  expect = 0.5 * out["icl_loss"] + 2.0 * out["mtm_loss"] + out["mlm_loss"]
  np.testing.assert_allclose(out["loss"], expect, rtol=1e-6)
  # total_loss is the one place of the weights (the micro-batched step
  # uses it on the accumulated terms).
  np.testing.assert_allclose(flip_lib.total_loss(out, model.config),
                             expect, rtol=1e-6)
  assert set(params) == {"ctr", "plm", "ctr_proj", "txt_proj", "mtm_head",
                         "nce", "mlm_head"}
  no_icl = flip_lib.FlipPretrainModel(fst.tiny_config(icl_enabled=False))
  p2 = subset_params(no_icl, batch)[1]
  assert "ctr_proj" not in p2 and "txt_proj" not in p2
  out2 = fst.apply(no_icl, p2, batch, c,
                      rngs={"noise": jax.random.PRNGKey(0)})
  assert "icl_loss" not in out2
  only_mlm = flip_lib.FlipPretrainModel(
      fst.tiny_config(icl_enabled=False, mtm_enabled=False))
  p3 = subset_params(only_mlm, batch)[0]
  assert set(p3) == {"ctr", "plm", "mlm_head"}
  # The pretraining backbone never creates the finetuning-only tables.
  assert "linear" not in p3["ctr"] and "head" not in p3["ctr"]


def test_mtm_attention_ignores_padding():
  """Changing states at padded positions leaves the MTM loss unchanged."""
  batch = fst.random_batch()
  c = fst.consts()
  model = flip_lib.FlipPretrainModel(
      fst.tiny_config(icl_enabled=False, mlm_enabled=False))
  params = subset_params(model, batch)[1]
  other = dict(batch)
  other["input_ids"] = np.where(batch["attention_mask"] > 0,
                                batch["input_ids"], 7).astype(np.int32)
  rngs = {"noise": jax.random.PRNGKey(3)}
  a = fst.apply(model, params, batch, c, rngs=rngs)
  b = fst.apply(model, params, other, c, rngs=rngs)
  np.testing.assert_allclose(a["mtm_loss"], b["mtm_loss"], rtol=1e-6)


def test_consts_fixture_is_the_production_one():
  """The fixture's constants are ``make_consts`` of a real FeatureMap.

  The previous hand-written fixture had ``log_q`` but no ``log_q_field``,
  so the per-field noise could not run on it (KeyError in the model).
  """
  c = fst.consts()
  assert set(c) == {"log_q", "log_q_field", "field_offsets", "field_sizes"}
  counts = fst.counts()
  np.testing.assert_array_equal(np.isfinite(c["log_q"]), counts > 0)
  # log_q_field: log q(j | field(j)); exp sums to 1 within every field.
  for f in range(fst.F):
    lo = f * fst.FIELD_SIZE
    np.testing.assert_allclose(
        np.exp(c["log_q_field"][lo:lo + fst.FIELD_SIZE]).sum(), 1.0,
        rtol=1e-5)
