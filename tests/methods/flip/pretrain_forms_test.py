"""``pretrain.icl.normalize=True`` and ``pretrain.share_unmasked_pass=False``
through one ``steps.train_step``.

Each set in the real config (tiny sizes), built by ``FlipPretrainTask`` and
trained one step on a batch its own masking transform drew: finite losses,
the step's metric keys, and a property of the option. (The other options:
pretrain_options_test.py, pretrain_noise_test.py,
pretrain_mlm_options_test.py.)
"""
import math

import jax
import numpy as np

from flip_jax import losses
from flip_jax.train import state as state_lib
from flip_jax.train import steps
from tests.methods.flip import flip_testlib as fst  # pylint: disable=g-bad-import-order

WITH_DROPPED = fst.STEP_KEYS | {"train/mlm_dropped"}


def test_icl_normalize_trains_one_step_on_cosine_logits():
  ct, m = fst.step_with_options(pretrain__icl__normalize=True)
  cfg = ct.task.model.config
  assert cfg.icl_normalize
  fst.assert_finite_step(m, WITH_DROPPED)
  # Cosine logits are bounded by 1/T, so is the loss: log B + 2/T.
  assert m["train/icl_loss"] <= math.log(fst.B) + 2 / cfg.icl_temperature

  # The step's ICL loss is InfoNCE of its L2-normalised views (same keys,
  # hence the same dropout), which differs from that of the raw views.
  model = ct.task.model
  rngs = steps.step_rngs(state_lib.raw_key(jax.random.PRNGKey(0)), 0,
                         ct.task.rng_streams)

  def views_and_loss(p, b, c, rngs):
    out = model.apply({"params": p}, b, c, deterministic=False, rngs=rngs)
    z_r, z_t = model.apply({"params": p}, b, deterministic=False, rngs=rngs,
                           method=model.icl_views)
    return out["icl_loss"], z_r, z_t
  icl, z_r, z_t = jax.jit(views_and_loss)(ct.params, ct.batch, ct.consts,
                                          rngs)
  np.testing.assert_allclose(icl, m["train/icl_loss"], rtol=1e-5)
  want, _ = losses.icl_loss(z_r, z_t, temperature=cfg.icl_temperature,
                            normalize=True)
  raw, _ = losses.icl_loss(z_r, z_t, temperature=cfg.icl_temperature,
                           normalize=False)
  np.testing.assert_allclose(icl, want, rtol=1e-5)
  assert abs(float(raw) - float(want)) > 1e-3


def test_official_second_unmasked_pass_trains_one_step():
  ct, m = fst.step_with_options(pretrain__share_unmasked_pass=False)
  assert not ct.task.model.config.share_unmasked_pass
  assert ct.task.model.config.mlm_masked_only
  fst.assert_finite_step(m, WITH_DROPPED)
  assert m["train/mlm_dropped"] == 0
