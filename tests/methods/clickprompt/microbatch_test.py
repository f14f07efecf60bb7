"""ClickPrompt's PA-MLM step: micro-batches equal the whole batch."""
import numpy as np

from tests.methods.clickprompt import cp_testlib as lib


def test_micro_batches_equal_the_whole_batch():
  task, example = lib.task_for("pretrain", dropout=0.0), lib.batch()
  h1, p1 = lib.run_steps(task, example, {}, lib.MESH_ONE)
  h2, p2 = lib.run_steps(task, example, {}, lib.MESH_ONE, micro_batches=2)
  lib.assert_same_runs(h1, p1, h2, p2)
  for key in ("train/mlm_acc", "train/mlm_masked_tokens"):
    np.testing.assert_allclose(h1[0][key], h2[0][key], rtol=1e-6)
