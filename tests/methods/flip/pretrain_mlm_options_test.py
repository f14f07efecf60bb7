"""``pretrain.mlm.masked_only=False`` and ``data.mlm_rule='token'`` through
one ``steps.train_step``.

Each set in the real config (tiny sizes), built by ``FlipPretrainTask`` and
trained one step on a batch its own masking transform drew (the 'token'
rule: BERT masking by the pipeline's transform): finite losses, the step's
metric keys, and the MLM counts of the batch.
"""
import math

import numpy as np

from tests.methods.flip import flip_testlib as fst  # pylint: disable=g-bad-import-order

WITH_DROPPED = fst.STEP_KEYS | {"train/mlm_dropped"}


def test_mlm_on_all_positions_trains_one_step():
  ct, m = fst.step_with_options(pretrain__mlm__masked_only=False)
  assert not ct.task.model.config.mlm_masked_only
  # No gather of masked positions: nothing dropped, nothing to report.
  fst.assert_finite_step(m, fst.STEP_KEYS)
  assert m["train/mlm_masked_tokens"] == np.sum(ct.batch["mlm_labels"] != -100)
  assert m["train/mlm_masked_tokens"] > 0


def test_token_mlm_rule_trains_one_step():
  ct, m = fst.step_with_options(data__mlm_rule="token")
  cfg, batch = ct.task.model.config, ct.batch
  # The head's gather holds what the rule can mask: 1.5 x p x L positions.
  assert cfg.mlm_max_masked == math.ceil(1.5 * 0.15 * 16)
  fst.assert_finite_step(m, WITH_DROPPED)

  # BERT masking: only real, non-special tokens are labelled, with their
  # original id; unlabelled tokens are untouched; some labelled ones are
  # replaced by [MASK] (80/10/10).
  labelled = batch["mlm_labels"] != -100
  special = np.isin(batch["input_ids"], fst.SPECIAL_IDS)
  assert labelled.any()
  assert not np.any(labelled & (special | (batch["attention_mask"] == 0)))
  np.testing.assert_array_equal(batch["mlm_labels"][labelled],
                                batch["input_ids"][labelled])
  np.testing.assert_array_equal(batch["mlm_input_ids"][~labelled],
                                batch["input_ids"][~labelled])
  assert np.any(batch["mlm_input_ids"][labelled] == fst.MASK_TOKEN)
  # The step's MLM counts are the batch's, capped per row by the gather.
  per_row = labelled.sum(axis=1)
  np.testing.assert_allclose(
      m["train/mlm_masked_tokens"],
      np.minimum(per_row, cfg.mlm_max_masked).sum())
  np.testing.assert_allclose(
      m["train/mlm_dropped"],
      np.maximum(per_row - cfg.mlm_max_masked, 0).sum())
