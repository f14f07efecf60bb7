"""Fingerprints of a checkpoint's arrays: a restore is verified against them.

Orbax reads back whatever bytes a data file holds: a flipped bit inside a
compressed chunk can decode to other numbers without any error. Every save
therefore records, per leaf, two 32-bit sums of the leaf's raw words and
its dtype (``digest``), and every restore recomputes them on what it read
(``mismatches``): a difference is damage, named by the leaf's path (a leaf
restored as another dtype, converted on the way in, is not compared).

The sums are position weighted (``sum_i w_i * (2i + 1)`` and the same over a
mixed word, modulo 2**32): any change of one word changes both, and they do not
depend on sharding, so a checkpoint restored onto another mesh verifies.
Accelerator arrays, and arrays this process holds only part of, are summed on
their devices (a jitted pass per leaf, no host copy; every process gets the
same replicated result); numpy arrays (the params-only reads) and whole CPU
arrays by the numpy twin, which gives the same numbers without compiling a
program per leaf shape (on CPU the device memory is the host's; compiling
was most of a small run's save and restore time).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flip_jax.tree_paths import path_str

_MIX = 0x85EBCA6B  # murmur3's finaliser constant


def _words_np(x: np.ndarray) -> np.ndarray:
  """One uint32 word per element, in C order."""
  x = np.ascontiguousarray(x)
  if x.dtype == np.bool_:
    return x.astype(np.uint32).reshape(-1)
  size = x.dtype.itemsize
  if size == 4:
    return x.view(np.uint32).reshape(-1)
  if size in (1, 2):
    return x.view(np.uint8 if size == 1 else np.uint16).astype(
        np.uint32).reshape(-1)
  if size == 8:  # both halves, in an order-free combination
    return x.view(np.uint32).reshape(-1, 2).sum(axis=1, dtype=np.uint32)
  raise TypeError(f"digest: unsupported dtype {x.dtype}")


# The numpy twin goes over the words a chunk at a time (weights and scratch
# stay in the CPU's cache, no temporaries of the leaf's size): with
# w_i = 2i + 1, a chunk starting at word s adds
# sum_i w_i x_{s+i} + 2s * sum_i x_{s+i}, so every chunk takes the same
# weights. numpy's uint32 dot and sum wrap modulo 2**32 like the jitted
# twin; the result is the same as one pass over the leaf (about 7x faster
# on a MiniLM word table, which every CPU save and restore digests).
_CHUNK = 1 << 16
_WEIGHTS = np.arange(_CHUNK, dtype=np.uint32) * np.uint32(2) + np.uint32(1)


def _sums_np(words: np.ndarray) -> list[int]:
  size = min(words.size, _CHUNK)
  mixed, shifted = np.empty(size, np.uint32), np.empty(size, np.uint32)
  plain_sum = mixed_sum = 0
  for start in range(0, words.size, _CHUNK):
    x = words[start:start + _CHUNK]
    n = x.size
    m, t, weights = mixed[:n], shifted[:n], _WEIGHTS[:n]
    np.multiply(x, np.uint32(_MIX), out=m)
    np.right_shift(m, np.uint32(13), out=t)
    np.bitwise_xor(m, t, out=m)
    plain_sum += int(np.dot(x, weights)) + 2 * start * int(
        x.sum(dtype=np.uint32))
    mixed_sum += int(np.dot(m, weights)) + 2 * start * int(
        m.sum(dtype=np.uint32))
  return [plain_sum & 0xFFFFFFFF, mixed_sum & 0xFFFFFFFF]


def _words_jnp(x: jax.Array) -> jax.Array:
  """`_words_np` on a device array (same words, same shape as ``x``)."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  size = x.dtype.itemsize
  if size == 4:
    return jax.lax.bitcast_convert_type(x, jnp.uint32)
  if size in (1, 2):
    narrow = jnp.uint8 if size == 1 else jnp.uint16
    return jax.lax.bitcast_convert_type(x, narrow).astype(jnp.uint32)
  if size == 8:
    return jax.lax.bitcast_convert_type(x, jnp.uint32).sum(
        axis=-1, dtype=jnp.uint32)
  raise TypeError(f"digest: unsupported dtype {x.dtype}")


def _sums_jnp(x: jax.Array) -> jax.Array:
  words = _words_jnp(x)
  index = jnp.zeros(words.shape, jnp.uint32)  # C-order position, no reshape
  stride = 1
  for d in reversed(range(words.ndim)):
    index += (jax.lax.broadcasted_iota(jnp.uint32, words.shape, d)
              * jnp.uint32(stride % 2**32))
    stride *= words.shape[d]
  weight = index * jnp.uint32(2) + jnp.uint32(1)
  mixed = words * jnp.uint32(_MIX)
  mixed = mixed ^ (mixed >> jnp.uint32(13))
  return jnp.stack([jnp.sum(words * weight, dtype=jnp.uint32),
                    jnp.sum(mixed * weight, dtype=jnp.uint32)])


# One program per leaf shape, dtype and sharding, not one per tree: a
# state's params and its optimizer moments share their programs, and so do
# the runs of one process (every stage of run_all) and, through the
# persistent compilation cache, later processes. A tree-wide program was
# compiled anew for every distinct tree (half of a tiny run's save time).
_sums_leaf = jax.jit(_sums_jnp)


def _dtype(leaf) -> str:
  dtype = getattr(leaf, "dtype", None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    return "key<uint32>"  # saved as its raw key data
  return str(np.dtype(dtype)) if dtype is not None else type(leaf).__name__


def on_host(leaf: jax.Array) -> bool:
  """Whether numpy reads `leaf` whole without a device copy: every shard
  is in this process and on a CPU device."""
  return leaf.is_fully_addressable and all(
      d.platform == "cpu" for d in leaf.sharding.device_set)


def _host_value(leaf: jax.Array) -> np.ndarray:
  """`leaf` as numpy (a PRNG key array as its raw key data)."""
  if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    leaf = jax.random.key_data(leaf)
  return np.asarray(leaf)


def digest(tree) -> dict[str, list]:
  """{leaf path: [sum, mixed sum, dtype]} of every array leaf of `tree`."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  out, device = {}, []
  for path, leaf in flat:
    if isinstance(leaf, jax.Array) and on_host(leaf):
      out[path_str(path)] = _sums_np(_words_np(_host_value(leaf))) + [
          _dtype(leaf)]
    elif isinstance(leaf, jax.Array):
      device.append((path_str(path), leaf))
    elif hasattr(leaf, "dtype") or isinstance(leaf, (int, float, bool)):
      leaf = np.asarray(leaf)
      out[path_str(path)] = _sums_np(_words_np(leaf)) + [_dtype(leaf)]
  if device:
    sums = jax.device_get([_sums_leaf(leaf) for _, leaf in device])
    out.update({name: [int(v) for v in s] + [_dtype(leaf)]
                for (name, leaf), s in zip(device, sums)})
  return out


def mismatches(tree, saved: dict[str, Any], prefix: str = "") -> list[str]:
  """Leaf paths of `tree` whose sums differ from `saved` (a `digest`).

  `prefix` is the path of `tree` inside the saved tree (``'params/'`` for a
  params-only read). Not checked: leaves the digest does not list, and
  leaves restored as another dtype than saved (converted on the way in).
  """
  bad = []
  for name, got in digest(tree).items():
    want = saved.get(prefix + name)
    if want is None or (len(want) > 2 and got[2] != want[2]):
      continue
    if list(want[:2]) != got[:2]:
      bad.append(name)
  return bad
