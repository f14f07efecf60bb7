"""CPU dry run of benchmarks/gpu_step_ab.py (issue 26): the script a lent
GPU runs, with a tiny random BERT, 2 configurations of 1 short window each.

Two runs start side by side (they take turns on the device by the lock);
then less than --min_start_s of the budget is left, so the third
configuration is skipped for the budget; an XLA-flag configuration is
skipped on CPU and an unknown atom is recorded as an error. The pure parts
(specs, the combination of winners, MFU) are checked directly.
"""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from benchmarks import step_ab_lib as lib
from tests.conftest import make_tiny_bert_dir

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("gpu_ab")
  plm = make_tiny_bert_dir(tmp / "bert", hidden=16, layers=1)
  out = tmp / "out"
  cmd = [sys.executable, "-m", "benchmarks.gpu_step_ab",
         f"--plms=random:{plm}@8", "--configs=base,b16,fqkv,lhs,nope",
         "--windows=1", "--window_steps=1", "--length=24", "--longest=16",
         "--max_masked=4", "--matmul_n=128", "--parallel=2", "--nocombo",
         "--budget_s=300", "--min_start_s=290", f"--out={out}",
         f"--work_dir={tmp / 'work'}"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  doc = json.loads((out / "gpu_step_ab.json").read_text())
  return doc, (out / "gpu_step_ab.log").read_text()


def _by_config(doc):
  return {r["config"]: r for r in doc["results"]}


@pytest.mark.slow  # the CPU dry run (~60 s); pure parts below stay fast
def test_runs_record_times_throughput_and_mfu_fields(dry_run):
  doc, log = dry_run
  assert doc["platform"] == "cpu"
  runs = _by_config(doc)
  for name in ("base", "b16"):
    r = runs[name]
    assert r["status"] == "ok", r
    assert r["step_s"] > 0 and r["compile_s"] > 0
    assert len(r["window_s"]) == 1
    assert r["examples_per_s"] == pytest.approx(8 / r["step_s"])
    assert r["model_gflop_per_step"] > 0 and r["model_tflops_per_s"] > 0
    assert r["mfu_datasheet"] is None and r["datasheet_peak_tflops"] is None
    assert 0 < r["mfu_matmul"]
    assert r["device_peak_gib"] is None  # no memory_stats on CPU
    assert r["matmul_peak_tflops"] > 0
  assert runs["b16"]["spec"]["bits"] == 16
  assert "base" in log and "MFU" in log


@pytest.mark.slow  # the CPU dry run (~60 s); pure parts below stay fast
def test_skipped_and_failed_configurations_are_recorded(dry_run):
  runs = _by_config(dry_run[0])
  assert runs["fqkv"]["status"] == "skipped"
  assert runs["fqkv"]["reason"].startswith("budget")
  assert runs["lhs"]["status"] == "skipped"
  assert "CPU" in runs["lhs"]["reason"]
  assert runs["nope"]["status"] == "err"
  assert "unknown atom" in runs["nope"]["error"]


@pytest.mark.slow  # the CPU dry run (~60 s); pure parts below stay fast
def test_profiles_of_the_baseline_and_the_best(dry_run):
  doc = dry_run[0]
  (label, best), = doc["best"].items()
  assert best in ("base", "b16")
  prof = doc["profiles"][label]
  for role in ("base", "best"):
    p = prof[role]
    if "share" in p:  # a CPU trace parsed: shares sum to one
      assert sum(p["share"].values()) == pytest.approx(1.0)
      assert p["top"]
    else:
      assert p["note"]


def test_spec_of_atoms():
  s = lib.spec("bf16+cudnn+b8+fqkv+remat+longest+lhs", "p", 1024, 100, 75,
               windows=3)
  assert (s["dtype"], s["attention"], s["attention_dropout"], s["bits"],
          s["fused_qkv"], s["remat"], s["batch"], s["length"]) == (
              "bfloat16", "cudnn", 0.0, 8, True, True, 2048, 75)
  assert "latency_hiding" in s["xla_flags"] and s["windows"] == 3
  base = lib.spec("base", "p", 512, 100, 75)
  assert (base["dtype"], base["bits"], base["xla_flags"]) == (
      "float32", 32, "")
  with pytest.raises(ValueError, match="unknown atom"):
    lib.spec("bf16+flash", "p", 8, 10, 5)


def test_combination_keeps_winners_best_of_each_group():
  def ok(config, ex_s):
    return {"config": config, "status": "ok", "examples_per_s": ex_s}
  results = [ok("bf16", 100), ok("bf16+fused", 110), ok("bf16+cudnn", 130),
             ok("bf16+b8", 105), ok("bf16+b16", 103), ok("bf16+fqkv", 101),
             ok("bf16+adrop0", 150), ok("bf16+lhs", 120),
             {"config": "bf16+remat", "status": "err"}]
  assert lib.combination(results, 0.02) == "bf16+cudnn+b8+lhs"
  assert lib.combination(results[:3], 0.02) is None  # one atom only
  assert lib.combination(results[1:], 0.02) is None  # no bf16 reference


def test_mfu_against_datasheet_and_matmul_peak():
  r = {"step_s": 0.1, "device_kind": "NVIDIA H200",
       "matmul_peak_tflops": 700.0}
  m = lib.mfu(r, 16303.0, "count")
  assert m["model_tflops_per_s"] == pytest.approx(163.03)
  assert m["mfu_datasheet"] == pytest.approx(163.03 / 989)
  assert m["mfu_matmul"] == pytest.approx(163.03 / 700)
  assert lib.mfu(dict(r, device_kind="cpu"), 1.0, "c")["mfu_datasheet"] is None
