"""Micro-batched FLIP pretraining in the official form (a second unmasked
PLM pass, the MLM head on all positions): same loss and gradient as the
whole batch, without dropout (the fast form: flip_microbatch_test.py)."""
import pytest

from tests.methods.flip import flip_testlib as fst  # pylint: disable=g-bad-import-order


@pytest.mark.parametrize("num", [2, 4])
def test_official_form_micro_batched_equals_whole_batch_without_dropout(num):
  fst.check_micro_batched_equals_whole_batch_without_dropout(num, "official")
