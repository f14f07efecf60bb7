"""The MTM noise keys of micro-batch i are ``fold_in(key, i)``.

With real (in-model) NCE noise and one micro-batch, the cached-gradient path
equals the whole batch under the folded keys: the fold is the only thing
that separates the micro-batches' negatives from the whole batch's (see
microbatch_nce_test.py for the equality with more micro-batches, where the
noise has to be made identical).
"""
import functools

import jax
import numpy as np

from flip_jax.methods.flip import pretrain
from flip_jax.methods.flip import pretrain_model as flip_lib
from tests.methods.flip import flip_testlib as fst  # pylint: disable=g-bad-import-order


def test_real_noise_is_folded_per_micro_batch():
  """One micro-batch with real noise == whole batch under fold_in(key, 0)."""
  model = flip_lib.FlipPretrainModel(fst.no_dropout_config(mtm_loss="nce"))
  batch, c, params = fst.padded_batch(), fst.consts(), fst.tiny_params()
  rngs = {"dropout": jax.random.PRNGKey(1), "noise": jax.random.PRNGKey(2)}
  folded = {k: jax.random.fold_in(v, 0) for k, v in rngs.items()}

  def whole(p):
    out = model.apply({"params": p}, batch, c, deterministic=False,
                      rngs=folded)
    return out["loss"], out
  (_, out1), g1 = jax.jit(jax.value_and_grad(whole, has_aux=True))(params)
  outm, gm, _ = jax.jit(functools.partial(
      pretrain.cached_icl_grads, model, num=1))(params, batch, c, rngs)
  for k in ("loss", "icl_loss", "mtm_loss", "mtm_acc", "mlm_loss"):
    np.testing.assert_allclose(outm[k], out1[k], rtol=2e-5, atol=1e-6,
                               err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      b, a, rtol=1e-4, atol=1e-6), g1, gm)
