"""Benchmark of the MTM noise samplers and losses in flip_jax.losses.

Times one jitted call (after a warm-up) of: a flat jax.random.categorical
draw over all N ids (the naive sampler), the two-level samplers of
``sample_noise`` ('cdf' default, 'gumbel'), and value+grad of the NCE,
sampled-softmax and full-softmax MTM losses. Default sizes are the
MovieLens-1M pretraining step: 1024 masked slots (B=1024, m_r=1), K=25,
N ~ 13k ids, d=32.

  python benchmarks/losses_bench.py --slots 1024 --num_ids 13000
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from flip_jax import losses
from flip_jax import noise as noise_lib


def _time_ms(fn, args, repeats):
  jax.block_until_ready(fn(*args))  # compile + warm-up
  start = time.perf_counter()
  for _ in range(repeats):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / repeats * 1e3


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--slots", type=int, default=1024)
  parser.add_argument("--num_ids", type=int, default=13000)
  parser.add_argument("--negatives", type=int, default=25)
  parser.add_argument("--dim", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--skip_flat", action="store_true",
                      help="skip the naive [S, K, N] Gumbel sampler")
  a = parser.parse_args()
  s, k, n, d = a.slots, a.negatives, a.num_ids, a.dim
  rng = np.random.default_rng(0)
  counts = rng.zipf(1.5, n).astype(np.float64)
  counts[:16] = 0  # reserved OOV/MASK ids
  log_q = noise_lib.noise_log_probs(counts)
  key = jax.random.PRNGKey(0)
  h = jnp.asarray(rng.normal(size=(s, d)), jnp.float32)
  emb = jnp.asarray(rng.uniform(-1, 1, size=(n, d)) / np.sqrt(d), jnp.float32)
  bias = losses.nce_bias_init(counts)
  target = jnp.asarray(rng.integers(16, n, s), jnp.int32)
  weight = jnp.ones((s,), jnp.float32)
  noise = noise_lib.sample_noise(key, log_q, (s, k))

  def grad_of(loss_fn):
    return jax.jit(jax.grad(lambda *p: loss_fn(*p)[0], argnums=(0, 1, 2)))

  cases = []
  if not a.skip_flat:
    cases.append(("flat categorical, [S,K,N] Gumbels", jax.jit(
        lambda r, lq: jax.random.categorical(r, lq, shape=(s, k))),
                  (key, log_q)))
  for method in ("cdf", "gumbel"):
    cases.append((f"sample_noise two-level {method}", jax.jit(
        lambda r, lq, m=method: noise_lib.sample_noise(r, lq, (s, k), method=m)),
                  (key, log_q)))
  cases += [
      ("nce_loss value+grad", grad_of(lambda *p: losses.nce_loss(
          *p, target, noise, log_q, weight)), (h, emb, bias)),
      ("sampled_softmax_loss value+grad", grad_of(
          lambda *p: losses.sampled_softmax_loss(*p, target, noise, log_q,
                                                 weight)), (h, emb, bias)),
      ("full_softmax_loss value+grad", grad_of(
          lambda *p: losses.full_softmax_loss(*p, target, weight)),
       (h, emb, bias)),
  ]
  dev = jax.devices()[0]
  print(f"device: {dev.device_kind} ({jax.default_backend()}, "
        f"{jax.device_count()} devices); S={s} K={k} N={n} d={d}")
  print(f"{'op':40s} {'ms/call':>10s}")
  for name, fn, args in cases:
    print(f"{name:40s} {_time_ms(fn, args, a.repeats):10.2f}")


if __name__ == "__main__":
  main()
