"""Micro-batched FLIP pretraining: same loss and gradient as the whole batch.

``pretrain.cached_icl_grads`` (MTM and MLM split exactly, ICL by cached
gradients) without dropout, full-softmax MTM, in the fast form. The generic
split / merge of ``flip_jax.train.microbatch`` is tested in
tests/train/microbatch_test.py (this file's name differs: pytest imports test
files by their basename). The rest of the micro-batch tests:
flip_microbatch_official_test.py (the official form),
flip_microbatch_step_test.py (dropout, training), microbatch_nce_test.py and
microbatch_nce_fold_test.py (NCE noise), microbatch_sharded_test.py (8
devices), finetune_microbatch_test.py (finetuning).
"""
import pytest

from tests.methods.flip import flip_testlib as fst  # pylint: disable=g-bad-import-order


@pytest.mark.parametrize("num", [2, 4])
def test_micro_batched_equals_whole_batch_without_dropout(num):
  fst.check_micro_batched_equals_whole_batch_without_dropout(num, "fast")
