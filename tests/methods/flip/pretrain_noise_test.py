"""``config.pretrain.mtm.noise='per_field'`` through one ``steps.train_step``.

The option reaches the model from the real config (see
pretrain_options_test.py); the negatives it draws stay in each masked slot's
field. It needs ``consts['log_q_field']`` (the NCE correction of the
per-field noise), which ``make_consts`` provides and the old hand-written
test constants lacked.
"""
import jax
import numpy as np

from tests.methods.flip import flip_testlib as fst  # pylint: disable=g-bad-import-order


def draw_noise(model, ct, seed=11):
  """The MTM negatives ``model`` draws for the slots of ``ct.batch``."""
  slots = ct.batch["mtm_positions"].size
  fn = jax.jit(lambda p, b, c, k: model.apply(
      {"params": p}, slots, b, c, rngs={"noise": k}, method="_noise"))
  return np.asarray(fn(ct.params, ct.batch, ct.consts,
                       jax.random.PRNGKey(seed)))


def test_per_field_noise_trains_one_step_and_stays_in_the_field():
  ct, m = fst.step_with_options(pretrain__mtm__noise="per_field")
  cfg = ct.task.model.config
  assert cfg.mtm_noise == "per_field" and cfg.mtm_loss == "nce"
  fst.assert_finite_step(m, fst.STEP_KEYS | {"train/mlm_dropped"})

  # The negatives the model draws for each MTM slot lie in the masked
  # field's id range and are never a reserved (OOV / MASK) id; the global
  # noise (same key) does leave the field.
  fm = ct.data.feature_map
  slots = ct.batch["mtm_positions"].size
  per_field = draw_noise(ct.task.model, ct)
  assert per_field.shape == (slots, cfg.mtm_num_negatives)
  field = ct.batch["mtm_positions"].reshape(-1)
  lo = fm.offsets[field][:, None]
  hi = lo + fm.vocab_sizes[field][:, None]
  assert np.all((per_field >= lo) & (per_field < hi))
  assert not np.any(fm.is_reserved(per_field))
  # ... and the noise covers more than one id of a field.
  assert len(np.unique(per_field)) > slots

  glob = fst.config_task(fst.with_options(pretrain__mtm__noise="global"),
                         params=ct.params)
  assert glob.task.model.config.mtm_noise == "global"
  global_noise = draw_noise(glob.task.model, ct)
  assert np.any((global_noise < lo) | (global_noise >= hi))
