r"""FLIP pretraining step throughput: fast form vs the official form.

  python -m benchmarks.pretrain_step                    # both forms, 3 runs each
  python -m benchmarks.pretrain_step --forms=fast --runs=1 --steps=3

DCNv2 + MiniLM-L6 (real weights), batch 128, text length 100, MLM + MTM +
ICL in one jitted step (donated state, AdamW). Each run is a fresh
subprocess (so peak memory is per form); runs of the two forms are
interleaved. Reports compile time apart from the steady-state step time,
examples/s, model GFLOP/s from XLA's cost analysis against a measured
float32 matmul peak, and the peak resident memory of the process.

Forms:
  fast      one unmasked PLM pass shared by ICL and MTM; MLM head on masked
            positions only (flip_jax defaults)
  official  two unmasked PLM passes; MLM head on all B x L positions (the
            official code's computation)
  <form>/mbM  the same with the batch split into M micro-batches whose
            grads are accumulated in the step (ICL by cached gradients),
            e.g. fast/mb4
  <form>@impl  the step's keys of PRNG implementation impl (config.prng_impl;
            default threefry2x32), e.g. fast/mb16@rbg
  <form>+bN   the PLM's dropout masks from N random bits per element
            (model.plm.dropout_bits: 32, 16 or 8), e.g. fast/mb16+b16
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys

from benchmarks import step_timing

FORMS = {
    "fast": dict(share_unmasked_pass=True, mlm_masked_only=True),
    "official": dict(share_unmasked_pass=False, mlm_masked_only=False),
}


def synthetic_batch(batch: int, length: int, vocab_size: int, mask_id: int,
                    num_fields: int = 8, field_size: int = 500):
  """(a FLIP pretraining batch, its consts) drawn with seed 0.

  ``num_fields`` fields of ``field_size`` ids each (one MTM position per
  row), prompts of 70-100 % of ``length`` tokens with one ~4-token value
  masked for MLM, and the NCE noise log-probs of random id counts.
  """
  # pylint: disable=g-import-not-at-top
  import numpy as np
  from flip_jax import noise as noise_lib
  # pylint: enable=g-import-not-at-top
  rs = np.random.RandomState(0)
  offsets = np.arange(num_fields) * field_size
  ids = (offsets + rs.randint(2, field_size, (batch, num_fields))).astype(np.int32)
  pos = rs.randint(0, num_fields, (batch, 1)).astype(np.int32)
  mtm_ids = ids.copy()
  np.put_along_axis(mtm_ids, pos, offsets[pos] + 1, 1)
  lengths = rs.randint(int(0.7 * length), length + 1, batch)
  attn = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
  input_ids = np.where(attn > 0, rs.randint(1000, vocab_size,
                                            (batch, length)), 0).astype(np.int32)
  mlm_labels = np.full((batch, length), -100, np.int32)
  mlm_ids = input_ids.copy()
  for i in range(batch):  # one field value of ~4 tokens masked per row
    start = rs.randint(1, lengths[i] - 5)
    mlm_labels[i, start:start + 4] = input_ids[i, start:start + 4]
    mlm_ids[i, start:start + 4] = mask_id
  b = {"ids": ids, "input_ids": input_ids, "attention_mask": attn,
       "mtm_ids": mtm_ids, "mtm_positions": pos,
       "mtm_labels": np.take_along_axis(ids, pos, 1),
       "mtm_weight": np.ones((batch, 1), np.float32),
       "mlm_input_ids": mlm_ids, "mlm_labels": mlm_labels}
  counts = rs.randint(1, 100, num_fields * field_size).astype(np.float64)
  return b, {"log_q": np.asarray(noise_lib.noise_log_probs(counts),
                                 np.float32)}


def run_one(form: str, batch: int, length: int, steps: int, plm: str,
            dtype: str, max_masked: int, remat: bool,
            trace_dir: str | None = None, count_only: bool = False,
            attention: str = "xla",
            attention_dropout: float | None = None, *,
            fused_qkv: bool = False, window: int = 1, gate=None) -> dict:
  """Builds the model and times `steps` train steps (in this process).

  count_only: only lower the step and return its model FLOPs. fused_qkv:
  PLMConfig.fused_qkv. window, gate: see step_timing.measure.
  """
  # pylint: disable=g-import-not-at-top
  import functools
  import jax
  import jax.numpy as jnp
  import optax
  from flax import linen as nn
  from flip_jax.models import ctr as ctr_lib
  from flip_jax.methods.flip import pretrain as flip_task
  from flip_jax.methods.flip import pretrain_model as flip_lib
  from flip_jax.models import plm as plm_lib
  from flip_jax.train import state as state_lib
  from flip_jax.train import steps as steps_lib
  # pylint: enable=g-import-not-at-top
  dt = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
  name = form
  impl = step_timing.rng_impl(form)
  bits = step_timing.dropout_bits(form)
  form, micro_batches = step_timing.variant(form)
  if plm.startswith("random:"):  # a config.json alone: random weights
    module, plm_params, mask_id = _random_plm(
        plm[len("random:"):], dt, remat, attention, attention_dropout, bits,
        fused_qkv)
  else:
    module, plm_params, tok = plm_lib.load_pretrained(
        plm, dtype=dt, remat=remat, attention=attention,
        attention_dropout=attention_dropout, dropout_bits=bits,
        fused_qkv=fused_qkv)
    mask_id = tok.mask_token_id
  num_fields, field_size = 8, 500
  n = num_fields * field_size
  cfg = flip_lib.FlipConfig(
      ctr=ctr_lib.CTRConfig(name="dcnv2", num_features=n,
                            num_fields=num_fields),
      plm=module.config, num_features=n, num_fields=num_fields, dtype=dt,
      mlm_max_masked=max_masked, plm_remat=remat, **FORMS[form])
  model = flip_lib.FlipPretrainModel(cfg)
  b, consts = synthetic_batch(batch, length, module.config.vocab_size,
                              mask_id, num_fields, field_size)
  tx = optax.adamw(1e-4, weight_decay=1e-3)
  rng = state_lib.new_key(0, impl)
  init = functools.partial(jax.jit(model.init), {"params": rng,
                                                 "dropout": rng,
                                                 "noise": rng}, b, consts)
  make_state = functools.partial(state_lib.create_train_state, tx=tx,
                                 rng=rng)
  # Counting needs shapes only: no forward pass at the full batch; else one
  # jitted init (not op by op).
  params = nn.meta.unbox((jax.eval_shape(init) if count_only
                          else init())["params"])
  params["plm"] = plm_params
  state = (jax.eval_shape(make_state, params) if count_only
           else make_state(params))
  task = flip_task.FlipPretrainTask(None, model)
  res = step_timing.measure(
      lambda mb: functools.partial(steps_lib.train_step, task=task,
                                   micro_batches=mb, rng_impl=impl),
      micro_batches, state, (b, consts), steps, trace_dir, count_only,
      window=window, gate=gate)
  res["form"] = name
  if count_only:
    return res
  m = res.pop("metrics")
  return dict(res, examples_per_s=batch / res["step_s"],
              peak_rss_gib=resource.getrusage(
                  resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
              losses={k: float(v) for k, v in m.items() if k.endswith("loss")})


def _random_plm(folder, dt, remat, attention, attention_dropout, bits=32,
                fused_qkv=False):
  """(module, random params, mask id) of the HF config in ``folder``.

  For sizes whose weights are not on the machine (RoBERTa-base): the step's
  cost does not depend on the weights' values.
  """
  # pylint: disable=g-import-not-at-top
  import pathlib
  import jax
  import jax.numpy as jnp
  from flax import linen as nn
  from flip_jax.models.plm import bert
  from flip_jax.models.plm import hf_import
  # pylint: enable=g-import-not-at-top
  cfg = hf_import.read_config(pathlib.Path(folder)).replace(
      attention_impl=attention, dropout_bits=bits, fused_qkv=fused_qkv)
  if attention_dropout is not None:
    cfg = cfg.replace(attention_dropout=attention_dropout)
  module = bert.PLMEncoder(cfg, dt, jnp.float32, remat)
  ids = jnp.ones((1, 8), jnp.int32)
  params = nn.meta.unbox(module.init(jax.random.key(0), ids, ids)["params"])
  return module, params, 4  # any in-vocabulary id serves as [MASK]


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--forms", default="fast,official")
  ap.add_argument("--runs", type=int, default=3)
  ap.add_argument("--steps", type=int, default=3)
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--length", type=int, default=100)
  ap.add_argument("--plm", default="minilm-l6")
  ap.add_argument("--dtype", default="float32")
  # Per-row gather size of the fast MLM head; the trainer derives it from the
  # data (the most tokens a row can have masked); ML-1M titles need ~32.
  ap.add_argument("--max_masked", type=int, default=32)
  ap.add_argument("--remat", action="store_true",
                  help="rematerialise PLM layers (less memory, more compute)")
  ap.add_argument("--trace_dir", default=None,
                  help="also write a profiler trace of 2 steps here")
  ap.add_argument("--attention", default="xla",
                  choices=("xla", "fused", "cudnn"),
                  help="PLM attention implementation (fused needs "
                       "--attention_dropout=0)")
  ap.add_argument("--attention_dropout", type=float, default=None,
                  help="override the PLM's attention dropout")
  ap.add_argument("--count_flops", action="store_true",
                  help="only print each form's model GFLOP/step, counted on "
                       "the CPU backend (XLA's GPU count leaves out cuBLAS)")
  ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.count_flops:
    os.environ["JAX_PLATFORMS"] = "cpu"  # before jax is imported
  if args.child or args.count_flops:
    for form in [args.child] if args.child else args.forms.split(","):
      print("RESULT " + json.dumps(run_one(
          form, args.batch, args.length, args.steps, args.plm, args.dtype,
          args.max_masked, args.remat, args.trace_dir, args.count_flops,
          args.attention, args.attention_dropout)))
    return
  forms = args.forms.split(",")
  results = {f: [] for f in forms}
  for r in range(args.runs):
    for f in forms:
      cmd = [sys.executable, "-m", "benchmarks.pretrain_step", "--child", f,
             "--batch", str(args.batch), "--length", str(args.length),
             "--steps", str(args.steps), "--plm", args.plm, "--dtype", args.dtype,
             "--max_masked", str(args.max_masked),
             "--attention", args.attention] + (
                 ["--attention_dropout", str(args.attention_dropout)]
                 if args.attention_dropout is not None else []) + (
                 ["--remat"] if args.remat else []) + (
                     ["--trace_dir", os.path.join(args.trace_dir, f"{f}{r}")]
                     if args.trace_dir else [])
      out = subprocess.run(cmd, capture_output=True, text=True, check=False)
      line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
      if not line:
        sys.exit(f"run {r} form {f} failed:\n{out.stderr[-3000:]}")
      res = json.loads(line[0][7:])
      results[f].append(res)
      print(f"run {r} {f}: {res['step_s']:.2f} s/step, "
            f"{res['examples_per_s']:.2f} ex/s, compile {res['compile_s']:.1f} s,"
            f" peak RSS {res['peak_rss_gib']:.2f} GiB (XLA temp "
            f"{res['xla_temp_gib']:.2f}), device peak "
            f"{res['device_peak_gib']:.2f} GiB", flush=True)
  # The parent touches the device only now: on a GPU, a parent holding its
  # memory pool would starve the children.
  import jax  # pylint: disable=g-import-not-at-top
  peak = step_timing.matmul_peak_gflops(dtype=args.dtype)
  device = f"{jax.devices()[0].device_kind} x{jax.device_count()} ({os.cpu_count()} cores)"
  on_cpu = jax.devices()[0].platform == "cpu"
  print(f"\ndevice: {device}; {args.dtype} matmul peak (XLA, measured): "
        f"{peak:.0f} GFLOP/s")
  print(f"batch {args.batch}, length {args.length}, PLM {args.plm}, dtype "
        f"{args.dtype}; medians over {args.runs} runs x {args.steps} steps\n")
  hdr = (f"{'form':<11} {'ex/s':>7} {'s/step':>7} {'compile s':>9} "
         f"{'GFLOP/step':>10} {'GFLOP/s':>8} {'% peak':>6} "
         f"{'peak RSS GiB' if on_cpu else 'dev peak GiB':>12}")
  print(hdr)
  rows = []
  mem_key = "peak_rss_gib" if on_cpu else "device_peak_gib"
  for f in forms:
    med = lambda k: statistics.median(r[k] for r in results[f])  # pylint: disable=cell-var-from-loop
    print(f"{f:<11} {med('examples_per_s'):>7.2f} {med('step_s'):>7.2f} "
          f"{med('compile_s'):>9.1f} {med('gflop_per_step'):>10.0f} "
          f"{med('gflops_per_s'):>8.0f} {100 * med('gflops_per_s') / peak:>6.1f} "
          f"{max(r[mem_key] for r in results[f]):>12.2f}")
    rows.append({"bench": f"pretrain_step/{f}", "device": device,
                 "batch": args.batch, "length": args.length,
                 "dtype": args.dtype, "peak_gflops": peak,
                 "device_peak_gib": max(r["device_peak_gib"]
                                        for r in results[f]),
                 "examples_per_s": med("examples_per_s"),
                 "gflops_per_s": med("gflops_per_s"),
                 "frac_peak": med("gflops_per_s") / peak,
                 "compile_s": med("compile_s"),
                 "peak_rss_gib": max(r["peak_rss_gib"] for r in results[f])})
  if "fast" in results and "official" in results:
    ratio = (statistics.median(r["examples_per_s"] for r in results["fast"])
             / statistics.median(r["examples_per_s"] for r in results["official"]))
    print(f"\nfast / official throughput: {ratio:.2f}x")
  for row in rows:
    print("BENCH " + json.dumps(row))


if __name__ == "__main__":
  main()
