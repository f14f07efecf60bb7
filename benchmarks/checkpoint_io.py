r"""Checkpoint and optimiser overheads of a FLIP-sized train state.

  python -m benchmarks.checkpoint_io                  # MiniLM-L6-sized state
  python -m benchmarks.checkpoint_io --plm_layers=2 --runs=1

The state mimics FLIP pretraining: a BERT-shaped PLM (vocab 30522, hidden
384, `--plm_layers` layers), a CTR feature table (`--table_rows` x 32) and a
DCNv2-sized MLP, with the FLIP optimiser (AdamW, decay on all params, a
separate lr group for the PLM). Reported (median of `--runs`):

  optimiser step   jitted apply_gradients with build_optimizer vs a plain
                   optax.adamw over the same params (multi_transform cost)
  save (blocking)  time the train loop is stalled by an async save
  save (commit)    until the checkpoint is committed on disk
  restore          full state onto the current shardings
  restore_params   params only, as numpy (the init-from path)
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time


def build_params(plm_layers: int, table_rows: int):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  keys = iter(jax.random.split(jax.random.key(0), 64 + 16 * plm_layers))
  norm = lambda *s: 0.02 * jax.random.normal(next(keys), s, jnp.float32)
  h, ff = 384, 1536
  layers = {}
  for i in range(plm_layers):
    layers[f"layer_{i}"] = {
        "attention": {n: {"kernel": norm(h, h), "bias": jnp.zeros(h)}
                      for n in ("query", "key", "value", "output")},
        "attention_norm": {"scale": jnp.ones(h), "bias": jnp.zeros(h)},
        "mlp_in": {"kernel": norm(h, ff), "bias": jnp.zeros(ff)},
        "mlp_out": {"kernel": norm(ff, h), "bias": jnp.zeros(h)},
        "mlp_norm": {"scale": jnp.ones(h), "bias": jnp.zeros(h)}}
  return {
      "plm": {"embeddings": {"word": norm(30522, h), "position": norm(512, h)},
              "encoder": layers},
      "ctr": {"embedding": norm(table_rows, 32),
              "dnn": {f"dense_{i}": {"kernel": norm(d_in, d_out),
                                     "bias": jnp.zeros(d_out)}
                      for i, (d_in, d_out) in enumerate(
                          [(256, 300), (300, 300), (300, 128)])}},
      "ctr_proj": {"kernel": norm(384, 128)},
      "txt_proj": {"kernel": norm(384, 128)}}


def timeit(fn, runs: int) -> float:
  times = []
  for _ in range(runs):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--plm_layers", type=int, default=6)
  parser.add_argument("--table_rows", type=int, default=10_000)
  parser.add_argument("--runs", type=int, default=5)
  parser.add_argument("--dir", default=None,
                      help="checkpoint scratch dir (default: a temp dir)")
  args = parser.parse_args()

  # pylint: disable=g-import-not-at-top
  import jax
  import ml_collections as mlc
  import numpy as np
  import optax
  from flip_jax import checkpoint, optim
  from flip_jax.train import state as state_lib

  params = build_params(args.plm_layers, args.table_rows)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  cfg = mlc.ConfigDict(dict(
      name="adamw", lr=1e-4, weight_decay=1e-3, b1=0.9, b2=0.999, eps=1e-8,
      decay_mask="all", grad_clip=None, param_groups=[(r"^plm/", 5e-5)],
      freeze=[], schedule=dict(name="cosine_epoch", epochs=30)))
  grads = jax.tree.map(lambda p: 1e-3 * np.ones(p.shape, p.dtype), params)
  rows = []

  def step_time(tx, label):
    # A private copy: the donated step deletes its input buffers.
    own = jax.tree.map(lambda x: x.copy(), params)
    st = state_lib.create_train_state(own, tx, jax.random.key(0))
    step = jax.jit(state_lib.apply_gradients, donate_argnums=0)
    st = step(st, grads)
    jax.block_until_ready(st)
    holder = [st]

    def one():
      holder[0] = step(holder[0], grads)
      jax.block_until_ready(holder[0])
    rows.append((f"optimiser step ({label})", timeit(one, args.runs * 4)))
    return holder[0]

  state = step_time(optim.build_optimizer(cfg, steps_per_epoch=100,
                                          total_steps=3000), "build_optimizer")
  step_time(optax.adamw(1e-4, weight_decay=1e-3), "plain optax.adamw")
  state_mb = sum(x.nbytes for x in jax.tree.leaves(state)) / 2 ** 20

  root = tempfile.mkdtemp(dir=args.dir, prefix="ckpt_bench_")
  try:
    ckpt = checkpoint.Checkpointer(root, max_to_keep=2,
                                   save_interval_steps=1, async_save=True)
    step_no = [0]
    blocking, commit = [], []
    for _ in range(args.runs):
      step_no[0] += 1
      t = time.perf_counter()
      ckpt.save(step_no[0], state)
      blocking.append(time.perf_counter() - t)
      ckpt.wait_until_finished()
      commit.append(time.perf_counter() - t)
    rows.append(("save (blocking, async)", statistics.median(blocking)))
    rows.append(("save (until committed)", statistics.median(commit)))
    abstract = checkpoint.abstract_like(state)
    latest = ckpt.latest_step()
    rows.append(("restore (full state)", timeit(
        lambda: jax.block_until_ready(ckpt.restore(latest, abstract)),
        args.runs)))
    rows.append(("restore_params (numpy)", timeit(
        lambda: checkpoint.restore_params(root), args.runs)))
    ckpt.close()
  finally:
    shutil.rmtree(root, ignore_errors=True)

  dev = jax.devices()[0]
  print(f"device: {dev.platform} {dev.device_kind} x{jax.device_count()}; "
        f"params {n_params / 1e6:.1f} M, state {state_mb:.0f} MiB "
        f"(params + AdamW moments); median of {args.runs} runs")
  print(f"{'operation':32s} {'seconds':>10s} {'MiB/s':>10s}")
  for name, sec in rows:
    rate = (f"{state_mb / sec:10.0f}" if "save" in name or "restore (" in name
            else f"{'':10s}")
    print(f"{name:32s} {sec:10.4f} {rate}")


if __name__ == "__main__":
  main()
