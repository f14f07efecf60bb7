"""Shared timing of one jitted train step (the step benchmarks use it).

``measure`` lowers and compiles the step, counts its model FLOPs, runs a
warm-up and ``steps`` timed steps, optionally writes a profiler trace, and
reads the device's peak memory. ``variant`` parses the ``<name>/mbM``
spelling of a micro-batched variant, ``rng_impl`` an ``@impl`` suffix and
``dropout_bits`` a final ``+bN`` (the PLM's dropout bits, e.g.
``joint/mb8+b16``).
"""
from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any, Callable

from flip_jax import xla_cost


def _strip_bits(name: str) -> str:
  return name.rpartition("+b")[0] if "+b" in name else name


def variant(name: str) -> tuple[str, int]:
  """'fast/mb8' -> ('fast', 8); 'joint' -> ('joint', 1); '@impl' and
  '+bN' ignored."""
  base, _, micro = _strip_bits(name).partition("@")[0].partition("/mb")
  return base, int(micro or 1)


def rng_impl(name: str) -> str | None:
  """'fast/mb8@rbg' -> 'rbg' (the step's PRNG implementation); else None."""
  return _strip_bits(name).partition("@")[2] or None


def dropout_bits(name: str) -> int:
  """'joint/mb8+b16' -> 16 (PLMConfig.dropout_bits); else 32."""
  return int(name.rpartition("+b")[2]) if "+b" in name else 32


def matmul_peak_gflops(n: int | None = None, reps: int = 10,
                       dtype: str = "float32") -> float:
  """Best-of-`reps` GFLOP/s of one jitted n x n matmul on random data.

  n defaults to 2048 on CPU and 8192 on accelerators (large enough to fill
  them); dtype is the compute dtype of the benchmark being compared.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  if n is None:
    n = 2048 if jax.devices()[0].platform == "cpu" else 8192
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32).astype(
      jnp.dtype(dtype))
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best / 1e9


def measure(make_step: Callable[[int], Any], micro_batches: int, state,
            args: tuple, steps: int, trace_dir: str | None = None,
            count_only: bool = False, window: int = 1,
            gate: Callable[[], Any] | None = None) -> dict:
  """Times ``make_step(micro_batches)`` (a step function) on (state, *args).

  Model FLOPs are those of the whole-batch step ``make_step(1)``: a scan
  body is counted once, and a micro-batched step's recompute is overhead,
  not model work. count_only: return {'gflop_per_step'} without compiling.
  Each of the ``steps`` timed samples is a window of ``window`` steps
  dispatched back to back; step_s is the median sample over ``window``.
  ``gate``: a context manager factory held from the warm-up to the end of
  the trace (e.g. a lock, so that processes compiling side by side take
  turns on the device). A failing trace is reported, not raised.

  Returns:
    dict with compile_s, step_s, window_s (every sample), gflop_per_step,
    gflops_per_s, xla_temp_gib, device_peak_gib, trace_error and the last
    step's ``metrics`` (device arrays).
  """
  import jax  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  plain = jax.jit(make_step(1), donate_argnums=0).lower(state, *args)
  flops = xla_cost.cost_flops(plain)
  if count_only:
    return {"gflop_per_step": flops / 1e9}
  if micro_batches > 1:
    t0 = time.perf_counter()
    lowered = jax.jit(make_step(micro_batches),
                      donate_argnums=0).lower(state, *args)
  else:
    lowered = plain
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  trace_error = None
  with (gate or contextlib.nullcontext)():
    state, m = compiled(state, *args)  # warm-up
    jax.block_until_ready(m)
    times = []
    for _ in range(steps):
      t = time.perf_counter()
      for _ in range(window):
        state, m = compiled(state, *args)
      jax.block_until_ready(m)
      times.append(time.perf_counter() - t)
    step_s = statistics.median(times) / window
    if trace_dir:
      try:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
          for _ in range(2):
            state, m = compiled(state, *args)
          jax.block_until_ready(m)
      except Exception as e:  # pylint: disable=broad-except
        trace_error = f"{type(e).__name__}: {e}"[:500]
  dev_stats = jax.devices()[0].memory_stats() or {}
  return {"compile_s": compile_s, "step_s": step_s,
          "window_s": [t / window for t in times], "trace_error": trace_error,
          "gflop_per_step": flops / 1e9, "gflops_per_s": flops / step_s / 1e9,
          "xla_temp_gib": getattr(mem, "temp_size_in_bytes", 0) / 2 ** 30,
          "device_peak_gib": dev_stats.get("peak_bytes_in_use", 0) / 2 ** 30,
          "metrics": m}
