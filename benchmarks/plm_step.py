"""Masked-LM forward+backward: our jitted MiniLM vs transformers' PyTorch BERT.

  python -m benchmarks.plm_step                       # batch 32, length 64
  python -m benchmarks.plm_step --runs=5 --steps=3 --batch=32 --length=64

Measures one training step without the optimiser update (loss, gradients of
every parameter) of MiniLM-L6-H384 (real weights, fresh MLM head) on a batch
of random ids with ~15% positions masked:

  jax/all-pos     logits on all B*L positions, loss on the masked ones (what
                  HF BertForMaskedLM does; the fair comparison)
  jax/masked-pos  logits only at the masked positions (what FLIP needs)
  torch/all-pos   BertForMaskedLM(labels=...) + loss.backward()

Variants are interleaved inside each run; each run times `--steps` steps and
the table shows medians over runs. Compilation (jax) and the first call
(torch) are timed apart. GFLOP/s uses analytic model FLOPs (matmuls only,
backward = 2x forward) and is compared with a measured 2048x2048 float32
matmul peak of the same framework.
"""
from __future__ import annotations

import os
import json
import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from flip_jax.models import plm

_BATCH = flags.DEFINE_integer("batch", 32, "Sequences per step.")
_LENGTH = flags.DEFINE_integer("length", 64, "Tokens per sequence.")
_MASK_RATIO = flags.DEFINE_float("mask_ratio", 0.15, "Masked fraction.")
_RUNS = flags.DEFINE_integer("runs", 3, "Timed runs per variant (>= 3).")
_STEPS = flags.DEFINE_integer("steps", 2, "Steps per timed run.")
_DROPOUT = flags.DEFINE_bool("dropout", True,
                             "Train-mode dropout on both sides.")
_PLM = flags.DEFINE_string("plm", "minilm-l6", "PLM name or folder.")
_MASK_ID = 103  # [MASK] in the BERT uncased vocabulary


def make_batch(vocab: int, b: int, length: int, ratio: float, seed=0):
  """Random ids with exactly round(ratio*L) masked positions per row."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(1000, vocab, (b, length)).astype(np.int32)
  ids[:, 0], ids[:, -1] = 101, 102
  n_mask = max(1, round(ratio * length))
  pos = np.sort(np.stack([rng.choice(np.arange(1, length - 1), n_mask, False)
                          for _ in range(b)]), axis=1).astype(np.int32)
  targets = np.take_along_axis(ids, pos, axis=1)
  inputs = ids.copy()
  np.put_along_axis(inputs, pos, _MASK_ID, axis=1)
  labels = np.full_like(ids, -100)
  np.put_along_axis(labels, pos, targets, axis=1)
  return {"input_ids": inputs, "attention_mask": np.ones_like(ids),
          "positions": pos, "targets": targets, "labels": labels}


def model_flops(cfg: plm.PLMConfig, b: int, length: int, n_logit_pos: int
                ) -> float:
  """Matmul FLOPs of forward+backward (3x forward)."""
  h, i, v = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
  per_tok = cfg.num_layers * (2 * 4 * h * h + 2 * 2 * h * i + 4 * length * h)
  head = n_logit_pos * (2 * h * h + 2 * h * v)
  return 3.0 * (b * length * per_tok + head)


def jax_step_fn(module, masked_only: bool, dropout: bool):
  """Jitted (loss, grads) of the MLM loss on masked positions."""
  def loss_fn(params, batch, rng):
    out = module.apply(
        {"params": params}, batch["input_ids"], batch["attention_mask"],
        positions=batch["positions"] if masked_only else None,
        deterministic=not dropout, rngs={"dropout": rng})
    logits = out["logits"]
    if masked_only:
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, batch["targets"]).mean()
    labels = batch["labels"]
    ce = optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.maximum(labels, 0))
    w = (labels >= 0).astype(jnp.float32)
    return (ce * w).sum() / w.sum()
  return jax.jit(jax.value_and_grad(loss_fn))


def matmul_peak(n: int = 2048, reps: int = 5) -> tuple[float, float]:
  """Measured float32 GFLOP/s of an n x n matmul: (xla, torch)."""
  import torch  # pylint: disable=g-import-not-at-top
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda x, y: x @ y)
  f(a, a).block_until_ready()
  ts = []
  for _ in range(reps):
    t0 = time.perf_counter()
    f(a, a).block_until_ready()
    ts.append(time.perf_counter() - t0)
  ta = torch.randn(n, n)
  torch.mm(ta, ta)
  tt = []
  for _ in range(reps):
    t0 = time.perf_counter()
    torch.mm(ta, ta)
    tt.append(time.perf_counter() - t0)
  flops = 2.0 * n ** 3
  return flops / min(ts) / 1e9, flops / min(tt) / 1e9


def main(argv):
  del argv
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  if _RUNS.value < 3:
    raise app.UsageError("--runs must be >= 3")
  torch.set_num_threads(os.cpu_count())
  b, length = _BATCH.value, _LENGTH.value
  module, params, _ = plm.load_pretrained(_PLM.value, with_mlm_head=True)
  cfg = module.config
  np_batch = make_batch(cfg.vocab_size, b, length, _MASK_RATIO.value)
  jbatch = {k: jnp.asarray(v) for k, v in np_batch.items()}
  n_mask = np_batch["positions"].size

  tmodel = transformers.AutoModelForMaskedLM.from_pretrained(
      str(plm.resolve_path(_PLM.value)))
  tmodel.train(_DROPOUT.value)
  tb = {k: torch.from_numpy(np_batch[k].astype(np.int64))
        for k in ("input_ids", "attention_mask", "labels")}

  def torch_step():
    tmodel.zero_grad(set_to_none=True)
    loss = tmodel(**tb).loss
    loss.backward()
    return loss

  variants = {}
  compile_s = {}
  for name, masked in (("jax/all-pos", False), ("jax/masked-pos", True)):
    fn = jax_step_fn(module, masked, _DROPOUT.value)
    t0 = time.perf_counter()
    compiled = fn.lower(params, jbatch, jax.random.key(0)).compile()
    compile_s[name] = time.perf_counter() - t0
    jax.block_until_ready(compiled(params, jbatch, jax.random.key(0)))

    def run(compiled=compiled):
      out = None
      for s in range(_STEPS.value):
        out = compiled(params, jbatch, jax.random.key(s))
      jax.block_until_ready(out)
    variants[name] = run
  t0 = time.perf_counter()
  torch_step()
  compile_s["torch/all-pos"] = time.perf_counter() - t0

  def run_torch():
    for _ in range(_STEPS.value):
      torch_step()
  variants["torch/all-pos"] = run_torch

  times = {k: [] for k in variants}
  for _ in range(_RUNS.value):  # interleaved
    for name, fn in variants.items():
      t0 = time.perf_counter()
      fn()
      times[name].append((time.perf_counter() - t0) / _STEPS.value)

  peak_xla, peak_torch = matmul_peak()
  tokens = b * length
  base = statistics.median(times["torch/all-pos"])
  print(f"device: jax {jax.devices()[0].device_kind} x{jax.device_count()}"
        f" ({jax.default_backend()}), torch threads {torch.get_num_threads()},"
        f" {os.cpu_count()} cores; model {_PLM.value} L{cfg.num_layers}"
        f" H{cfg.hidden_size} V{cfg.vocab_size}; batch {b}x{length},"
        f" {n_mask} masked; dropout {_DROPOUT.value}")
  print(f"float32 2048^3 matmul peak: XLA {peak_xla:.1f} GFLOP/s, torch"
        f" {peak_torch:.1f} GFLOP/s")
  print(f"{'variant':<16}{'compile/1st s':>14}{'step ms (med)':>15}"
        f"{'min':>9}{'max':>9}{'tokens/s':>11}{'GFLOP/s':>9}{'%peak':>7}"
        f"{'vs torch':>10}")
  for name, ts in times.items():
    med = statistics.median(ts)
    n_pos = n_mask if name == "jax/masked-pos" else tokens
    gflops = model_flops(cfg, b, length, n_pos) / med / 1e9
    peak = peak_torch if name.startswith("torch") else peak_xla
    print(f"{name:<16}{compile_s[name]:>14.2f}{med * 1e3:>15.1f}"
          f"{min(ts) * 1e3:>9.1f}{max(ts) * 1e3:>9.1f}{tokens / med:>11.0f}"
          f"{gflops:>9.1f}{100 * gflops / peak:>7.1f}{base / med:>9.2f}x")
    print("BENCH " + json.dumps({
        "bench": f"plm_step/{name}", "tokens_per_s": tokens / med,
        "examples_per_s": b / med, "gflops_per_s": gflops,
        "frac_peak": gflops / peak, "compile_s": compile_s[name],
        "device": jax.devices()[0].device_kind}))


if __name__ == "__main__":
  app.run(main)
