"""The environment of the test processes and of the launchers they start.

One place for the XLA settings of a test run, so that every test process and
every child (a launcher, ``run_all``, a helper script) compiles the same way
and shares the run's compilation cache entries (the cache key holds the
flags).

* ``--xla_cpu_use_fusion_emitters=false``: XLA:CPU emits fusions with its
  older LLVM emitters, not the MLIR fusion emitters; compiling the tiny
  test programs takes about 30 % less (benchmarks/compile_flags.py).
  Numerics are XLA:CPU's either way; tests compare runs made under the same
  flags.
* ``JAX_DISABLE_MOST_OPTIMIZATIONS``: XLA's optimization level 0 (the tiny
  programs run in microseconds; compiling them is what costs).
"""
from __future__ import annotations

import os

FAST_COMPILE_FLAGS = ("--xla_cpu_use_fusion_emitters=false",)


def xla_flags(devices: int, base: str = "") -> str:
  """``base`` with ``devices`` fake CPU devices and the fast-compile flags
  (a device count already in ``base`` is replaced)."""
  kept = [f for f in base.split()
          if not f.startswith("--xla_force_host_platform_device_count")
          and f not in FAST_COMPILE_FLAGS]
  return " ".join([*kept, f"--xla_force_host_platform_device_count={devices}",
                   *FAST_COMPILE_FLAGS])


def setup_process(devices: int) -> None:
  """This process's environment (before jax is imported): ``devices`` fake
  CPU devices, the fast-compile flags, CPU only, offline."""
  os.environ["XLA_FLAGS"] = xla_flags(devices, os.environ.get("XLA_FLAGS", ""))
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "true")
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
  os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def child_env(devices: int = 1, **extra: str) -> dict[str, str]:
  """The environment of a child process on ``devices`` fake CPU devices:
  this process's (``setup_process``'s settings, the cache folder) with the
  device count replaced, plus ``extra``."""
  return dict(os.environ, **extra,
              XLA_FLAGS=xla_flags(devices, os.environ.get("XLA_FLAGS", "")))
