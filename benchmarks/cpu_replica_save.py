r"""Saving replicated arrays on 8 CPU devices: orbax's replica-parallel
writing against whole replicas
(`flip_jax.checkpoint_arrays.write_replicas_whole_on_cpu`).

  python -m benchmarks.cpu_replica_save                # 3 rounds
  python -m benchmarks.cpu_replica_save --rounds=5 --plm_layers=2

Each round starts one fresh process per variant, in a rotated order (an
interleaved A/B), on 8 fake CPU devices with the compilation cache off. A
process builds a FLIP-shaped train state (`benchmarks.checkpoint_io`'s
params, with Adam's two moments: three copies), replicates it over the 8
devices (data parallelism), and times two synchronous saves through
`flip_jax.checkpoint.Checkpointer`: the first pays any compiling, the
second shows what a later save costs. Variant `replica_parallel` keeps
orbax's default handler (one slice per replica, each an eager XLA program);
`whole` is what the Checkpointer registers on CPU. Prints each measurement
and the medians.
"""
from __future__ import annotations

import argparse

from benchmarks import compile_flags

_CHILD = r"""
import json, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
import jax
from jax.sharding import NamedSharding, PartitionSpec as P
from benchmarks import checkpoint_io
from flip_jax import checkpoint
from flip_jax import checkpoint_arrays
if sys.argv[2] == "replica_parallel":
  checkpoint_arrays.write_replicas_whole_on_cpu = lambda: False
params = checkpoint_io.build_params(int(sys.argv[3]), 5000)
state = {"params": params, "mu": params, "nu": params}
rep = NamedSharding(jax.make_mesh((8,), ("data",)), P())
state = jax.device_put(state, rep)
jax.block_until_ready(state)
out = {}
with tempfile.TemporaryDirectory() as tmp:
  ckpt = checkpoint.Checkpointer(tmp, max_to_keep=None,
                                 save_interval_steps=1, async_save=False)
  for step, name in ((1, "first_save"), (2, "second_save")):
    t = time.perf_counter()
    ckpt.save(step, state)
    ckpt.wait_until_finished()
    out[name] = time.perf_counter() - t
  ckpt.close()
print(json.dumps(out))
"""

VARIANTS = ("replica_parallel", "whole")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--plm_layers", type=int, default=1)
  args = parser.parse_args()
  times = compile_flags.interleaved(
      VARIANTS, args.rounds, lambda v: compile_flags.run_fresh(
          _CHILD, v, str(args.plm_layers), devices=8))
  print(f"\nmedians over {args.rounds} rounds (8 CPU devices):")
  for v, outs in times.items():
    print(f"  {v}: " + ", ".join(
        f"{k} {t:.2f} s" for k, t in compile_flags.medians(outs).items()))


if __name__ == "__main__":
  main()
