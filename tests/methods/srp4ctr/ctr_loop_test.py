"""The SRP4CTR CTR task on the shared loop: resume is bitwise; the best
model exports to PyTorch with parity <= 1e-5."""
import pytest
import jax
import numpy as np

from experiments.configs import srp4ctr_ctr
from flip_jax.methods import run_export
from flip_jax.methods.srp4ctr import export
from tests.methods.srp4ctr import srp_testlib as lib


def config(cache_dir, max_steps):
  return lib.set_fields(
      srp4ctr_ctr.get_config("dataset=synthetic,preset=tiny"),
      {**lib.tiny_overrides(cache_dir), "train.max_steps": max_steps,
       "train.batch_size": 16, "train.eval_every_steps": 3,
       "train.patience": 10, "srp4ctr.num_queries": 2,
       "log_every_steps": 1})


# slow: the shared loop's bitwise resume is covered by tests/methods/flip/pretrain_loop_test.py.
@pytest.mark.slow
def test_resume_is_bitwise(tmp_path):
  cache = tmp_path / "cache"
  full = lib.train(config(cache, 6), tmp_path / "full")
  lib.train(config(cache, 3), tmp_path / "part")
  part = lib.train(config(cache, 6), tmp_path / "part")
  assert part["init_rule"] == "resume from step 3"
  s1, p1 = lib.final_params(tmp_path / "full")
  s2, p2 = lib.final_params(tmp_path / "part")
  assert s1 == s2 == 6
  jax.tree.map(np.testing.assert_array_equal, p1, p2)
  np.testing.assert_array_equal(full["test/auc"], part["test/auc"])
  logged = [r["step"] for r in lib.read_metrics(tmp_path / "part")]
  assert logged == list(range(1, 7))
  # The finished run's best model in PyTorch (parity checked on test rows).
  out = tmp_path / "torch"
  diff = run_export.export_run(tmp_path / "full", out, check=True)
  assert diff <= 1e-5
  assert export.load(str(out)).cfg.num_queries == 2
