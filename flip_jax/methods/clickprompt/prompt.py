"""ClickPrompt's prompt generators and heads (CLICKPROMPT_SRP4CTR.md A4, A7).

* ``PrefixGenerator`` (the code form, layer-wise soft prompts):
    h = tanh(W1 q + b1)              W1: final_dim -> d   (``hidden``)
    P = W2 h + b2                    W2: d -> K * 2L * d  (``out``)
  P is [B, K, 2L, heads, d_h]; layer l takes P[:, :, 2l] as its key prefix
  and P[:, :, 2l + 1] as its value prefix (``layer_prefixes``). W2's kernel
  is stored as [d, K, 2L, heads, d_h] so that its output is sharded over
  'heads' like the PLM's attention.
* ``InputPromptGenerator`` (the ablation, input-layer prompts): K separate
  Linear(final_dim -> d) maps without activation, as one [final_dim, K, d]
  kernel (each slice initialised as its own Linear would be).
* ``Linear``: a torch-style Linear with the official ``weight_init``
  (Xavier-normal weight, zero bias) for the new heads (``ctr_head``,
  ``nlp_head``).

Parameters are float32; the generators compute in ``dtype`` (float32 by
default even under bf16 compute: the prefixes feed every attention layer).
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from flip_jax.models.plm import layers as plm_layers


def xavier_std(fan_in: int, fan_out: int) -> float:
  """std of torch's ``xavier_normal_`` for a (fan_out, fan_in) weight."""
  return math.sqrt(2.0 / (fan_in + fan_out))


class Linear(nn.Module):
  """y = x W + b with W Xavier-normal and b = 0 (ClickPrompt's init).

  Attributes:
    features: output width.
    axes: logical names of the kernel's (input, output) axes.
    dtype: compute dtype.
  """
  features: int
  axes: tuple[Any, Any] = ("hidden_in", "hidden")
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    fan_in = x.shape[-1]
    kernel = self.param(
        "kernel", plm_layers.normal_init(xavier_std(fan_in, self.features),
                                   self.axes),
        (fan_in, self.features), jnp.float32)
    bias = self.param("bias", plm_layers.zeros_init((self.axes[1],)),
                      (self.features,), jnp.float32)
    return (jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))
            + bias.astype(self.dtype))


class PrefixGenerator(nn.Module):
  """q [B, final_dim] -> P [B, K, 2L, heads, d_h] (see the module doc)."""
  num_prompt: int
  num_layers: int
  num_heads: int
  head_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, q):
    d = self.num_heads * self.head_dim
    h = jnp.tanh(Linear(d, ("hidden_in", "embed"), self.dtype,
                        name="hidden")(q))
    out_shape = (self.num_prompt, 2 * self.num_layers, self.num_heads,
                 self.head_dim)
    std = xavier_std(d, int(math.prod(out_shape)))
    return plm_layers.MultiAxisDense(
        (d,), out_shape, ("embed", None, None, "heads", "kv"),
        (None, None, "heads", "kv"), std, dtype=self.dtype,
        name="out")(h.astype(self.dtype))


class InputPromptGenerator(nn.Module):
  """q [B, final_dim] -> K input-layer prompts [B, K, d]."""
  num_prompt: int
  hidden_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, q):
    std = xavier_std(q.shape[-1], self.hidden_size)
    return plm_layers.MultiAxisDense(
        (q.shape[-1],), (self.num_prompt, self.hidden_size),
        ("hidden_in", None, "embed"), (None, "embed"), std, dtype=self.dtype,
        name="out")(q.astype(self.dtype))


def layer_prefixes(p: jax.Array, dtype) -> tuple[tuple[jax.Array, jax.Array],
                                                 ...]:
  """P [B, K, 2L, N, D] -> one (key, value) pair per layer, [B, N, K, D]."""
  p = jnp.transpose(p, (2, 0, 3, 1, 4)).astype(dtype)   # [2L, B, N, K, D]
  return tuple((p[2 * l], p[2 * l + 1]) for l in range(p.shape[0] // 2))


def prompt_vectors(p: jax.Array, hidden_size: int) -> jax.Array:
  """Every prompt vector of a generator output: [B, n, d] (n = K*2L or K)."""
  return p.reshape(p.shape[0], -1, hidden_size)


def generator_size(final_dim: int, hidden_size: int, num_layers: int,
                   num_prompt: int) -> dict[str, int]:
  """Parameter counts of the prefix generator (W1 + b1, W2 + b2)."""
  out = num_prompt * 2 * num_layers * hidden_size
  return {"hidden": final_dim * hidden_size + hidden_size,
          "out": hidden_size * out + out}


class NlpHead(nn.Module):
  """l_PLM = Linear(d -> 1)(tanh(Linear(d -> d)(pooled))) (``nlp_head``)."""
  hidden_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pooled):
    h = jnp.tanh(Linear(self.hidden_size, ("embed", None), self.dtype,
                        name="dense")(pooled))
    return Linear(1, (None, None), jnp.float32, name="out")(
        h.astype(jnp.float32))[..., 0]


POOLERS = ("cls", "avg", "avg_first_last", "avg_top2")


def pool(pooler: str, hidden_states, mask) -> jax.Array:
  """The pooled sentence vector [B, d] (official ``pool_nlp_outputs``).

  Args:
    pooler: one of POOLERS.
    hidden_states: the encoder's (embeddings, layer 1, ..., layer L)
      outputs, each [B, T, d].
    mask: [B, T] positions averaged over (the text mask; with input-layer
      prompts the prompt slots too, as the official code passes).

  Returns:
    float32 [B, d].
  """
  last = hidden_states[-1].astype(jnp.float32)
  if pooler == "cls":
    return last[:, 0]
  if pooler == "avg":
    h = last
  elif pooler == "avg_first_last":
    h = (hidden_states[1].astype(jnp.float32) + last) / 2.0
  elif pooler == "avg_top2":
    h = (hidden_states[-2].astype(jnp.float32) + last) / 2.0
  else:
    raise ValueError(f"pooler {pooler!r}: expected one of {POOLERS}")
  m = mask.astype(jnp.float32)[..., None]
  return jnp.sum(h * m, axis=1) / jnp.sum(m, axis=1)
