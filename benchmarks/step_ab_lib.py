"""Configurations, the child run and the arithmetic of ``gpu_step_ab``.

A configuration is atoms joined by '+' on top of the full preset's defaults
(``base``: float32 compute, XLA attention with dropout, 32-bit dropout
masks, separate Q / K / V matmuls, no remat, prompts padded to
``data.max_length`` = 100). Each atom is a config flag of the real run:

  bf16        model.dtype=bfloat16
  fused       model.plm.attention=fused (jax.nn.dot_product_attention, its
              default implementation: XLA's in jax 0.10) + attention_dropout=0
  cudnn       model.plm.attention=cudnn (cuDNN's fused kernel) + the same
  adrop0      model.plm.attention_dropout=0 alone (the control of the two)
  b8, b16     model.plm.dropout_bits=8 / 16
  fqkv        model.plm.fused_qkv=True
  remat       model.plm.remat=True at REMAT_BATCH_FACTOR x the batch
  longest     data.pad_to=longest: the data's longest prompt (--longest)
  lhs         XLA_FLAGS: latency-hiding scheduler (GPU only)
  cmdbuf_off  XLA_FLAGS: no command buffers (GPU only)
  cmdbuf_all  XLA_FLAGS: command buffers for every op kind listed (GPU only)
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import time

# Atom -> what it changes in the child's spec ("xla_flags" go to the
# environment of its fresh process).
ATOMS = {
    "base": {},
    "bf16": {"dtype": "bfloat16"},
    "fused": {"attention": "fused", "attention_dropout": 0.0},
    "cudnn": {"attention": "cudnn", "attention_dropout": 0.0},
    "adrop0": {"attention_dropout": 0.0},
    "b8": {"bits": 8},
    "b16": {"bits": 16},
    "fqkv": {"fused_qkv": True},
    "remat": {"remat": True},
    "longest": {"longest": True},
    "lhs": {"xla_flags": "--xla_gpu_enable_latency_hiding_scheduler=true"},
    "cmdbuf_off": {"xla_flags": "--xla_gpu_enable_command_buffer="},
    "cmdbuf_all": {"xla_flags": "--xla_gpu_enable_command_buffer=FUSION,"
                                "CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN"},
}
# The default matrix, most telling first (the budget cuts the tail).
MATRIX = ("base", "bf16", "bf16+cudnn", "bf16+fqkv", "bf16+b8",
          "bf16+longest", "bf16+lhs", "bf16+fused", "bf16+remat",
          "bf16+b16", "bf16+cmdbuf_off", "bf16+adrop0")
# Atoms of one kind: a combination keeps the best of each group.
EXCLUSIVE = (("fused", "cudnn"), ("b8", "b16"), ("cmdbuf_off", "cmdbuf_all"))
# Not combined: a control, not a candidate.
NOT_COMBINED = ("base", "bf16", "adrop0")
REMAT_BATCH_FACTOR = 2
# Datasheet dense bf16 peaks (TFLOP/s), matched in the device kind.
DATASHEET_TFLOPS = {"H100": 989.0, "H200": 989.0}


def atoms(config: str) -> list[str]:
  """'bf16+fused' -> ['bf16', 'fused']; raises on an unknown atom."""
  names = config.split("+")
  unknown = [a for a in names if a not in ATOMS]
  if unknown:
    raise ValueError(f"unknown atom(s) {unknown} in {config!r}; known: "
                     f"{sorted(ATOMS)}")
  return names


def spec(config: str, plm: str, batch: int, length: int, longest: int,
         **common) -> dict:
  """The child's spec of ``config`` for one PLM (``common``: windows,
  window_steps, max_masked, matmul_n, trace_dir, lock)."""
  s = dict(common, config=config, plm=plm, batch=batch, length=length,
           dtype="float32", attention="xla", attention_dropout=None,
           bits=32, fused_qkv=False, remat=False, xla_flags="")
  for atom in atoms(config):
    for key, value in ATOMS[atom].items():
      if key == "xla_flags":
        s["xla_flags"] = f"{s['xla_flags']} {value}".strip()
      elif key == "longest":
        s["length"] = longest
      else:
        s[key] = value
  if s["remat"]:
    s["batch"] = batch * REMAT_BATCH_FACTOR
  return s


def combination(results: list[dict], min_gain: float) -> str | None:
  """'bf16+a+b' of the single atoms on top of bf16 that beat bf16 by at
  least ``min_gain`` (the best of each exclusive group); None if < 2."""
  speed = {r["config"]: r["examples_per_s"] for r in results
           if r.get("status") == "ok"}
  if "bf16" not in speed:
    return None
  gains = {}
  for config, ex_s in speed.items():
    parts = config.split("+")
    if (len(parts) == 2 and parts[0] == "bf16"
        and parts[1] not in NOT_COMBINED
        and ex_s >= (1 + min_gain) * speed["bf16"]):
      gains[parts[1]] = ex_s
  for group in EXCLUSIVE:
    present = sorted((a for a in group if a in gains), key=gains.get)
    for loser in present[:-1]:
      del gains[loser]
  chosen = [a for a in ATOMS if a in gains]
  return "+".join(["bf16"] + chosen) if len(chosen) >= 2 else None


def datasheet_tflops(device_kind: str) -> float | None:
  for name, peak in DATASHEET_TFLOPS.items():
    if name in device_kind:
      return peak
  return None


def mfu(result: dict, model_gflop: float | None, source: str) -> dict:
  """MFU fields of one child result (None where a figure is missing)."""
  step_s = result.get("step_s")
  tflops = (model_gflop / step_s / 1e3 if model_gflop and step_s else None)
  sheet = datasheet_tflops(result.get("device_kind", ""))
  matmul = result.get("matmul_peak_tflops")
  return {"model_gflop_per_step": model_gflop, "flops_source": source,
          "model_tflops_per_s": tflops, "datasheet_peak_tflops": sheet,
          "mfu_datasheet": tflops / sheet if tflops and sheet else None,
          "mfu_matmul": tflops / matmul if tflops and matmul else None}


_HELD = []  # the lock file this process holds the device by


@contextlib.contextmanager
def device_turn(lock_path: str | None):
  """Takes the device for the rest of this process (runs compile side by
  side and run in turn). The lock goes with the process's exit, when its
  device memory does: the next run starts on a freed device."""
  if lock_path and not _HELD:
    f = open(lock_path, "a", encoding="utf-8")  # pylint: disable=consider-using-with
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      fcntl.flock(f, fcntl.LOCK_EX)
      time.sleep(0.5)  # the previous holder's memory is being released
    _HELD.append(f)
  yield


def run_child(s: dict) -> dict:
  """Builds and times the spec's step in this process (the child)."""
  # pylint: disable=g-import-not-at-top
  import jax
  from benchmarks import pretrain_step
  from benchmarks import step_timing
  # pylint: enable=g-import-not-at-top
  t0 = time.perf_counter()
  form = "fast" + (f"+b{s['bits']}" if s["bits"] != 32 else "")
  res = pretrain_step.run_one(
      form, s["batch"], s["length"], s["windows"], s["plm"], s["dtype"],
      s["max_masked"], s["remat"], s.get("trace_dir"),
      attention=s["attention"], attention_dropout=s["attention_dropout"],
      fused_qkv=s["fused_qkv"], window=s["window_steps"],
      gate=lambda: device_turn(s.get("lock")))
  dev = jax.devices()[0]
  on_cpu = dev.platform == "cpu"
  with device_turn(s.get("lock")):
    peak = step_timing.matmul_peak_gflops(n=s.get("matmul_n"), reps=5,
                                          dtype="bfloat16")
  return dict(
      res, platform=dev.platform, device_kind=dev.device_kind,
      device_peak_gib=None if on_cpu else res["device_peak_gib"],
      matmul_peak_tflops=peak / 1e3, batch=s["batch"], length=s["length"],
      child_wall_s=time.perf_counter() - t0, pid=os.getpid())
