"""ClickPrompt's train steps: 8 fake devices (data, FSDP and heads sharded)
equal one device (micro-batches: microbatch_test.py)."""
import pytest

from tests.methods.clickprompt import cp_testlib as lib

@pytest.mark.multidevice
@pytest.mark.parametrize("mode", ["pretrain", "prefix_add"])
def test_eight_devices_equal_one(mode):
  task, example = lib.task_for(mode, dropout=0.1), lib.batch()
  h1, p1 = lib.run_steps(task, example, {}, lib.MESH_ONE)
  h8, p8 = lib.run_steps(task, example, {}, lib.MESH_EIGHT)
  lib.assert_same_runs(h1, p1, h8, p8)
  if mode == "pretrain":
    assert h8[0]["train/mlm_masked_tokens"] == (example["mlm_labels"]
                                                != -100).sum()
  else:
    assert h8[0]["train/alpha"] == 0.5
