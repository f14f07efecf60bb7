r"""Checkpoint digests on CPU: numpy (chunked / one pass) and the device pass.

  python -m benchmarks.digest_ab                 # 3 rounds, 2 state sizes
  python -m benchmarks.digest_ab --rounds=5 --plm_layers=1,6

Every save digests the whole train state and every restore digests what it
read and checks the params for NaN / Inf (``flip_jax.checkpoint_digest``,
``checkpoint.non_finite_leaves``). Whole CPU arrays go through numpy
(``numpy``: the chunked twin in use; ``numpy_one_pass``: the earlier form,
one pass over each whole leaf with leaf-sized temporaries, same sums); the
other path is one jitted program per leaf shape, which is what an
accelerator or a partly held array uses. Each round starts one fresh
process per variant (``compile_flags.run_fresh``: no compilation cache,
the tests' optimization level 0), in a rotated order, on the FLIP-shaped
state of ``benchmarks.checkpoint_io`` (params + two AdamW moments) and
times the first digest + finite check (compiles included: what a short run
pays) and the second (what every later save pays). Prints each measurement
and the medians per variant and size.
"""
from __future__ import annotations

import argparse

from benchmarks import compile_flags

_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import jax
from benchmarks import checkpoint_io
from flip_jax import checkpoint, checkpoint_digest
import numpy as np
if sys.argv[2] == "device":
  checkpoint_digest.on_host = lambda leaf: False
if sys.argv[2] == "numpy_one_pass":
  def one_pass(words):
    weight = np.arange(words.size, dtype=np.uint32) * np.uint32(2) + 1
    mixed = words * np.uint32(checkpoint_digest._MIX)
    mixed ^= mixed >> np.uint32(13)
    return [int(np.sum(w * weight, dtype=np.uint64) & 0xFFFFFFFF)
            for w in (words, mixed)]
  checkpoint_digest._sums_np = one_pass
params = checkpoint_io.build_params(int(sys.argv[3]), 10_000)
state = {"params": params, "mu": jax.tree.map(lambda x: x * 0.5, params),
         "nu": jax.tree.map(lambda x: x * x, params)}
jax.block_until_ready(state)
out = {}
for name in ("first", "second"):
  t = time.perf_counter()
  checkpoint_digest.digest(state)
  checkpoint.non_finite_leaves(params)
  out[name] = time.perf_counter() - t
print(json.dumps(out))
"""


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--plm_layers", default="1,6",
                      help="PLM depths of the state (1: test-sized leaf "
                      "count, 6: MiniLM-L6)")
  args = parser.parse_args()
  variants = ("numpy", "numpy_one_pass", "device")
  got = {}
  for layers in (int(x) for x in args.plm_layers.split(",")):
    runs = compile_flags.interleaved(
        variants, args.rounds,
        lambda v: compile_flags.run_fresh(_CHILD, v, str(layers)),  # pylint: disable=cell-var-from-loop
        label=f"layers={layers} ", digits=3)
    got.update({(layers, v): outs for v, outs in runs.items()})
  print(f"\nmedians over {args.rounds} rounds (s)")
  print(f"{'PLM layers':>10s} {'variant':>14s} {'first':>8s} {'second':>8s}")
  for (layers, v), outs in got.items():
    med = compile_flags.medians(outs)
    print(f"{layers:10d} {v:>14s} {med['first']:8.3f} {med['second']:8.3f}")


if __name__ == "__main__":
  main()
