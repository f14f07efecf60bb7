r"""Joint (FLIP) finetuning step throughput: DCNv2 + MiniLM-L6.

  python -m benchmarks.finetune_step                  # joint, batch 128, L 100
  python -m benchmarks.finetune_step --modes=id,plm,joint --runs=3
  python -m benchmarks.finetune_step --modes=joint,joint/mb4   # 4 micro-batches
  python -m benchmarks.finetune_step --modes=joint,joint@rbg   # PRNG impl A/B
  python -m benchmarks.finetune_step --modes=joint/mb8,joint/mb8+b16  # dropout bits

One jitted step of flip_jax.methods.flip.finetune (BCE of the mix + both
branches + L2, AdamW with a PLM parameter group, donated state) on a random
batch of the real shapes. Reports compile time apart from the steady-state step
time, examples/s, model GFLOP/s (XLA cost analysis) and the fraction of the
measured float32 matmul peak, and prints one `BENCH {json}` line per mode.
Reference (FLIP.md / issue 6): the official PyTorch joint step runs at about
15.6 examples/s on a 2-core machine (851 GFLOP per step).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics

from benchmarks import step_timing


def run(mode: str, batch: int, length: int, steps: int, plm: str,
        dtype: str = "float32", trace_dir: str | None = None,
        count_only: bool = False) -> dict:
  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp
  import numpy as np
  from flax import linen as nn
  from flip_jax import optim
  from flip_jax.models import ctr as ctr_lib
  from flip_jax.methods.flip import finetune
  from flip_jax.methods.flip import finetune_model as ft_lib
  from flip_jax.models import plm as plm_lib
  from flip_jax.train import state as state_lib
  from flip_jax.train import steps as steps_lib
  from experiments.configs import flip_finetune
  # pylint: enable=g-import-not-at-top
  name = mode
  impl = step_timing.rng_impl(mode)
  bits = step_timing.dropout_bits(mode)
  mode, micro_batches = step_timing.variant(mode)
  cfg = flip_finetune.get_config(f"mode={mode},preset=full")
  num_fields, field_size = 8, 500
  plm_module, plm_params, _ = plm_lib.load_pretrained(plm, dropout_bits=bits)
  model = ft_lib.FlipCtrModel(ft_lib.FinetuneConfig(
      mode=mode,
      ctr=ctr_lib.CTRConfig(name="dcnv2", num_features=num_fields * field_size,
                            num_fields=num_fields) if mode != "plm" else None,
      plm=plm_module.config if mode != "id" else None,
      dtype=jnp.dtype(dtype)))
  rs = np.random.RandomState(0)
  lengths = rs.randint(int(0.7 * length), length + 1, batch)
  attn = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
  b = {"ids": (np.arange(num_fields) * field_size
               + rs.randint(2, field_size, (batch, num_fields))).astype(np.int32),
       "input_ids": np.where(attn > 0, rs.randint(1000, 30000, (batch, length)),
                             0).astype(np.int32),
       "attention_mask": attn,
       "label": rs.randint(0, 2, batch).astype(np.float32),
       "weight": np.ones(batch, np.float32)}
  rng = state_lib.new_key(0, impl)
  params = nn.meta.unbox(model.init({"params": rng}, b)["params"])
  if mode != "id":
    params["plm"] = plm_params
  tx = optim.build_optimizer(cfg.optim, steps_per_epoch=100, total_steps=100)
  state = state_lib.create_train_state(params, tx, rng)
  task = finetune.FlipFinetuneTask(cfg, model)
  res = step_timing.measure(
      lambda mb: functools.partial(steps_lib.train_step, task=task,
                                   micro_batches=mb, rng_impl=impl),
      micro_batches, state, (b, {}), steps, trace_dir, count_only)
  res["mode"] = name
  if not count_only:
    res.pop("metrics")
    res["examples_per_s"] = batch / res["step_s"]
  return res


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--modes", default="joint")
  ap.add_argument("--runs", type=int, default=3)
  ap.add_argument("--steps", type=int, default=3)
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--length", type=int, default=100)
  ap.add_argument("--plm", default="minilm-l6")
  ap.add_argument("--trace_dir", default=None,
                  help="also write a profiler trace of 2 steps here")
  ap.add_argument("--dtype", default="float32",
                  help="compute dtype of the PLM (params stay float32)")
  ap.add_argument("--count_flops", action="store_true",
                  help="only print each mode's model GFLOP/step, counted on "
                       "the CPU backend (XLA's GPU count leaves out cuBLAS)")
  args = ap.parse_args()
  if args.count_flops:
    os.environ["JAX_PLATFORMS"] = "cpu"  # before jax is imported
    for mode in args.modes.split(","):
      print("RESULT " + json.dumps(run(mode, args.batch, args.length, 0,
                                       args.plm, args.dtype, count_only=True)))
    return
  import jax  # pylint: disable=g-import-not-at-top
  peak = step_timing.matmul_peak_gflops(dtype=args.dtype)
  device = (f"{jax.devices()[0].device_kind} x{jax.device_count()} "
            f"({os.cpu_count()} cores)")
  print(f"device: {device}; {args.dtype} matmul peak (XLA, measured): "
        f"{peak:.0f} GFLOP/s")
  modes = args.modes.split(",")
  results = {m: [] for m in modes}
  for i in range(args.runs):  # interleaved: run i of every mode, then i + 1
    for mode in modes:
      r = run(mode, args.batch, args.length, args.steps, args.plm, args.dtype,
              args.trace_dir and os.path.join(
                  args.trace_dir, f"{mode.replace('/', '_')}{i}"))
      results[mode].append(r)
      print(f"run {i} {mode}: {r['examples_per_s']:.2f} ex/s", flush=True)
  for mode in modes:
    res = results[mode]
    med = {k: statistics.median(r[k] for r in res)
           for k in ("compile_s", "step_s", "examples_per_s", "gflop_per_step",
                     "gflops_per_s")}
    med.update(mode=mode, batch=args.batch, length=args.length, device=device,
               dtype=args.dtype,
               peak_gflops=peak, frac_peak=med["gflops_per_s"] / peak)
    print(f"{mode:<9} {med['examples_per_s']:7.2f} ex/s  {med['step_s']:6.2f} "
          f"s/step  compile {med['compile_s']:5.1f} s  "
          f"{med['gflop_per_step']:6.0f} GFLOP/step  "
          f"{med['gflops_per_s']:5.0f} GFLOP/s ({100 * med['frac_peak']:.0f}% "
          "of peak)")
    print("BENCH " + json.dumps({"bench": f"finetune_step/{mode}", **med}))


if __name__ == "__main__":
  main()
