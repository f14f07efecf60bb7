"""``config.pretrain.mtm.loss`` in {nce, sampled, full} through one
``steps.train_step``.

Each option is set in the real config (experiments/configs/flip_pretrain.py
at tiny sizes), reaches the model through ``FlipPretrainTask.build_model``
(``flip_config``), and trains one step on a batch the task's masking
transform drew: finite losses and the step's metric keys. The other options:
pretrain_noise_test.py (mtm.noise=per_field), pretrain_forms_test.py (ICL
normalisation, one or two unmasked passes), pretrain_mlm_options_test.py
(MLM on all positions, the 'token' rule).
"""
import pytest

from tests.methods.flip import flip_testlib as fst  # pylint: disable=g-bad-import-order


@pytest.mark.parametrize("loss", ["nce", "sampled", "full"])
def test_mtm_loss_trains_one_step(loss):
  ct, m = fst.step_with_options(pretrain__mtm__loss=loss)
  assert ct.task.model.config.mtm_loss == loss
  fst.assert_finite_step(m, fst.STEP_KEYS | {"train/mlm_dropped"})
  assert m["train/mtm_loss"] > 0
