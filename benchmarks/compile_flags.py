r"""XLA:CPU flags against the test suite's compile time: an interleaved A/B.

  python -m benchmarks.compile_flags                  # 3 rounds
  python -m benchmarks.compile_flags --rounds=5 \
      --variant="--xla_cpu_use_fusion_emitters=false --xla_cpu_use_xnnpack=false"

The suite's programs are tiny: compiling them, not running them, is what a
test pays for. Each round starts one fresh process per variant (no
compilation cache) in a rotated order and times two workloads the suite
is made of: the FLIP micro-batched pretraining gradient checked against the
whole batch (the step-level tests' shape: a dozen jitted programs), and a
two-step run of the ID model through the shared loop (the loop's init,
train, evaluation and checkpoint programs). All processes run at optimization
level 0 (``JAX_DISABLE_MOST_OPTIMIZATIONS``, as the tests). Prints each
measurement and the medians per variant; the XLA flags the tests use are in
tests/helpers/env.py.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from tests.helpers import env as env_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHILD = r"""
import json, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
import jax
from tests.methods.flip import flip_testlib as fst
from tests.train import loop_test
t0 = time.perf_counter()
fst.check_micro_batched_equals_whole_batch_without_dropout(2, "official")
t1 = time.perf_counter()
with tempfile.TemporaryDirectory() as tmp:
  cfg = loop_test.ctr_config(tmp + "/cache")
  loop_test.train(cfg, tmp + "/run")
t2 = time.perf_counter()
print(json.dumps({"flip_step_check": t1 - t0, "ctr_loop": t2 - t1}))
"""

# XLA's defaults against the flags the tests compile with.
DEFAULT_VARIANTS = ("", " ".join(env_lib.FAST_COMPILE_FLAGS))


def run_fresh(code: str, *args: str, flags: str = "",
              devices: int = 1) -> dict:
  """Runs ``code`` in a fresh CPU process, as a compile-time A/B needs it:
  ``devices`` fake devices (one by default), optimization level 0 (as the
  tests), no compilation cache, ``flags`` as XLA_FLAGS, a scratch working
  folder, the repository as ``sys.argv[1]`` and ``args`` after it. Returns
  its last stdout line, parsed as JSON."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             JAX_DISABLE_MOST_OPTIMIZATIONS="true",
             XLA_FLAGS=(f"--xla_force_host_platform_device_count={devices} "
                        f"{flags}"))
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  env.pop("FLIP_JAX_COMPILE_CACHE", None)
  with tempfile.TemporaryDirectory() as tmp:
    proc = subprocess.run([sys.executable, "-c", code, REPO, *args],
                          cwd=tmp, env=env, capture_output=True, text=True,
                          check=False)
  if proc.returncode:
    raise SystemExit(f"fresh process {list(args)} flags {flags!r} failed:\n"
                     f"{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def rotated(variants, round_index: int):
  """``variants`` in round ``round_index``'s order: each starts a round in
  turn (an interleaved A/B, so drift in the machine hits all alike)."""
  k = round_index % len(variants)
  return tuple(variants[k:]) + tuple(variants[:k])


def interleaved(variants, rounds: int, run, label: str = "",
                digits: int = 2) -> dict[str, list[dict[str, float]]]:
  """``run(variant)`` (a dict of seconds, e.g. ``run_fresh``'s) for every
  variant, ``rounds`` times, each round in its `rotated` order; prints each
  result as it comes. Returns the results per variant, in round order."""
  times = {v: [] for v in variants}
  for r in range(rounds):
    for v in rotated(variants, r):
      out = run(v)
      times[v].append(out)
      print(f"{label}round {r} {v or '(none)'!r}: " + ", ".join(
          f"{k} {t:.{digits}f} s" for k, t in out.items()), flush=True)
  return times


def medians(outs: list[dict[str, float]]) -> dict[str, float]:
  """The median of each timing over runs."""
  return {k: statistics.median(o[k] for o in outs) for k in outs[0]}


def print_medians(title: str, times: dict[str, list[dict[str, float]]],
                  digits: int = 2, total: bool = False) -> None:
  """``title``, then each variant's medians (of `interleaved`'s results),
  with their sum if ``total``."""
  print(f"\n{title}")
  for v, outs in times.items():
    med = medians(outs)
    print(f"  {v or '(none)'}: " + ", ".join(
        f"{k} {t:.{digits}f} s" for k, t in med.items())
          + (f", total {sum(med.values()):.{digits}f} s" if total else ""))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--variant", action="append",
                      help="XLA_FLAGS of one variant ('' = none); repeat")
  args = parser.parse_args()
  variants = args.variant or list(DEFAULT_VARIANTS)
  times = interleaved(variants, args.rounds,
                      lambda v: run_fresh(_CHILD, flags=v))
  print_medians(f"medians over {args.rounds} rounds:", times, total=True)


if __name__ == "__main__":
  main()
