"""Subprocess for checkpoint_test: saves step 1, then starts a big step-2 save.

Usage: python ckpt_kill_child.py WORKDIR

Prints "SAVED 1" once step 1 is committed and "SAVING 2" right after the
asynchronous step-2 save has started, then sleeps; the test SIGKILLs it while
step 2 is being written.
"""
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import grain  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from flip_jax import checkpoint  # pylint: disable=g-import-not-at-top

NUM_ARRAYS = 24  # 24 x 4 MiB of noise: the step-2 save takes ~0.4 s.


def make_state(step: int) -> dict:
  """Deterministic state of ~96 MiB (the test rebuilds step 1's values)."""
  rng = np.random.default_rng(step)
  return {"step": jnp.int32(step),
          "params": {f"w{i}": jnp.asarray(
              rng.random((1024, 1024), np.float32))
                     for i in range(NUM_ARRAYS)}}


def make_iter():
  return iter(grain.MapDataset.range(100).shuffle(seed=0).batch(4)
              .to_iter_dataset())


def main(workdir: str) -> None:
  ckpt = checkpoint.Checkpointer(workdir, max_to_keep=3,
                                 save_interval_steps=1, async_save=True)
  it = make_iter()
  next(it)
  ckpt.save(1, make_state(1), it)
  ckpt.wait_until_finished()
  print("SAVED 1", flush=True)
  next(it)
  state2 = make_state(2)
  ckpt.save(2, state2, it)
  print("SAVING 2", flush=True)
  time.sleep(120)


if __name__ == "__main__":
  main(sys.argv[1])
