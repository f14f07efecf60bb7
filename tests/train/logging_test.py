"""Tests for flip_jax.train.logging: MetricWriter, Progress, checks."""
import json
import logging as py_logging
import os

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest

from flip_jax import sharding
from flip_jax.train import logging as run_logging


def _lines(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_metric_writer_jsonl_and_tensorboard(tmp_path):
  with run_logging.MetricWriter(tmp_path, enabled=True) as w:
    w.write_scalars(1, {"train/loss": jnp.float32(0.5), "train/n": 3})
    w.write_scalars(2, {"train/loss": np.array([0.25]),
                        "eval/auc": np.float64(0.75)})
    # Flushed per call: readable before close.
    assert len(_lines(tmp_path / "metrics.jsonl")) == 2
  assert _lines(tmp_path / "metrics.jsonl") == [
      {"step": 1, "train/loss": 0.5, "train/n": 3},
      {"step": 2, "train/loss": 0.25, "eval/auc": 0.75}]
  assert run_logging.read_metrics(tmp_path)[1]["eval/auc"] == 0.75
  events = os.listdir(tmp_path / "tb")
  assert any(e.startswith("events.out.tfevents") for e in events), events
  assert max(os.path.getsize(tmp_path / "tb" / e) for e in events) > 100


def test_metric_writer_rejects_bad_values(tmp_path):
  with run_logging.MetricWriter(tmp_path, enabled=True) as w:
    with pytest.raises(ValueError, match=r"'train/x': expected a scalar, "
                       r"got shape \(2,\)"):
      w.write_scalars(1, {"train/x": np.zeros(2)})
    with pytest.raises(TypeError, match="'train/s': expected a number"):
      w.write_scalars(1, {"train/s": "abc"})
  with pytest.raises(RuntimeError, match="after close"):
    w.write_scalars(3, {"a": 1.0})


def test_metric_writer_resume_truncates_past_restored_step(tmp_path):
  with run_logging.MetricWriter(tmp_path, enabled=True) as w:
    for step in range(1, 11):
      w.write_scalars(step, {"train/loss": float(step)})
  # Simulate a crash mid-line at the end of the file.
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 11, "train/lo')
  with run_logging.MetricWriter(tmp_path, enabled=True, resume_step=5) as w:
    assert [r["step"] for r in _lines(w.path)] == [1, 2, 3, 4, 5]
    w.write_scalars(6, {"train/loss": 60.0})
  rows = _lines(tmp_path / "metrics.jsonl")
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
  assert rows[-1]["train/loss"] == 60.0
  # No resume_step: append as is.  Negative: a first start drops them all.
  with run_logging.MetricWriter(tmp_path, enabled=True) as w:
    w.write_scalars(7, {"a": 1.0})
  assert len(_lines(tmp_path / "metrics.jsonl")) == 7
  run_logging.MetricWriter(tmp_path, enabled=True, resume_step=-1).close()
  assert _lines(tmp_path / "metrics.jsonl") == []


def test_metric_writer_corrupt_line_names_file_and_line(tmp_path):
  (tmp_path / "metrics.jsonl").write_text(
      '{"step": 1}\nnot json\n{"step": 2}\n')
  with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a JSON object"):
    run_logging.MetricWriter(tmp_path, enabled=True, resume_step=1)


def test_metric_writer_disabled_writes_nothing(tmp_path):
  w = run_logging.MetricWriter(tmp_path / "run", enabled=False)
  w.write_scalars(1, {"train/loss": 1.0})
  w.close()
  assert not os.path.exists(tmp_path / "run")


def test_check_finite_names_step_and_every_term():
  run_logging.check_finite(3, {"train/loss": 1.0, "train/icl_loss": 0.5})
  with pytest.raises(FloatingPointError) as e:
    run_logging.check_finite(17, {"train/loss": jnp.float32(jnp.nan),
                                  "train/icl_loss": 0.25,
                                  "train/mtm_loss": np.inf,
                                  "train/mlm_loss": 1.5})
  msg = str(e.value)
  assert "step 17" in msg
  assert "non-finite train/loss, train/mtm_loss" in msg
  for term in ("train/loss=nan", "train/icl_loss=0.25", "train/mtm_loss=inf",
               "train/mlm_loss=1.5"):
    assert term in msg, msg


@pytest.fixture(autouse=True)
def _absl_info_verbosity():
  """Other tests may parse absl flags in this process (verbosity WARNING)."""
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  old = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.INFO)
  yield
  absl_logging.set_verbosity(old)


def test_progress_logs_rate_and_eta(caplog):
  now = [100.0]
  prog = run_logging.Progress(100, every_steps=10, examples_per_step=32,
                              start_step=20, clock=lambda: now[0])
  caplog.set_level(py_logging.INFO)
  now[0] += 5.0
  assert prog.update(25, {"train/loss": 1.0}) is None  # not due
  now[0] += 5.0
  perf = prog.update(30, {"train/loss": jnp.float32(0.5)})
  assert perf["perf/steps_per_sec"] == pytest.approx(1.0)  # 10 steps / 10 s
  assert perf["perf/examples_per_sec"] == pytest.approx(32.0)
  msg = caplog.records[-1].getMessage()
  assert "step 30/100 (30.0%)" in msg
  assert "train/loss=0.5" in msg
  assert "32.0 ex/s" in msg
  assert "ETA 0:01:10" in msg, msg  # 70 steps left at 1 step/s
  now[0] += 1.0
  assert prog.update(100, {})["perf/steps_per_sec"] == pytest.approx(70.0)


def test_log_startup_lines(caplog):
  caplog.set_level(py_logging.INFO)
  params = {"ctr": {"emb": jnp.zeros((10, 4)), "w": jnp.zeros((4,))},
            "plm": {"kernel": jnp.zeros((3, 2), jnp.bfloat16)}}
  mesh = sharding.make_mesh([("data", -1), ("fsdp", 1), ("tensor", 1)])
  cfg = mlc.ConfigDict({"seed": 2012, "optim": {"lr": 1e-4}})
  lines = run_logging.log_startup(cfg, mesh, params)
  text = "\n".join(lines)
  assert "jax " in lines[0] and "flax " in lines[0] and "optax " in lines[0]
  assert "orbax-checkpoint " in lines[0]
  n = jax.device_count()  # 8 or 1 (conftest)
  assert f"devices: {n} global" in text
  assert f"'data': {n}" in text
  assert '"seed": 2012' in text
  assert "params: 50 in 3 arrays" in text
  assert "  ctr: 44 (88.0%)" in text
  assert "    plm/kernel (3, 2) bfloat16" in text
  assert "params: 50 in 3 arrays" in caplog.text
