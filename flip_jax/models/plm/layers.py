"""Building blocks of the post-LN BERT/RoBERTa encoder (`bert.PLMEncoder`).

Initialisers and LayerNorm with logical axis names, the multi-axis dense
layer, self-attention with its output sub-layer, the feed-forward block, one
transformer layer and the layer stack. Names follow HF (see `bert`'s module
docstring for the parameter table); softmax and LayerNorm statistics run in
float32 whatever the compute dtype.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from flip_jax.models.plm.config import PLMConfig

Dtype = Any
ACT_SPEC = ("batch", "length", "embed")


def activation(name: str):
  """HF `hidden_act` name -> function ('gelu' is the exact erf form)."""
  if name == "gelu":
    return lambda x: jax.nn.gelu(x, approximate=False)
  if name in ("gelu_new", "gelu_pytorch_tanh"):
    return lambda x: jax.nn.gelu(x, approximate=True)
  if name == "relu":
    return jax.nn.relu
  raise ValueError(f"unsupported activation {name!r}")


def normal_init(std: float, names: tuple[Any, ...]):
  """Normal(0, std) initialiser carrying logical axis names."""
  return nn.with_logical_partitioning(nn.initializers.normal(std), names)


def zeros_init(names: tuple[Any, ...]):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


def layer_norm(cfg: PLMConfig, dtype: Dtype, param_dtype: Dtype,
               name: str | None = None) -> nn.LayerNorm:
  """HF-compatible LayerNorm (epsilon from the checkpoint config)."""
  return nn.LayerNorm(
      epsilon=cfg.layer_norm_eps, dtype=dtype, param_dtype=param_dtype,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(),
                                              ("embed",)),
      bias_init=zeros_init(("embed",)), name=name)


class LowBitDropout(nn.Module):
  """Dropout whose mask costs ``bits`` random bits per element (8 or 16).

  One 32-bit draw gives 32 // bits elements their uniform ``bits``-bit
  numbers; an element is kept when its number is >= round(rate * 2**bits),
  so the rate is that count / 2**bits, and kept values are scaled by the
  inverse keep probability (the mean is preserved). Draws are laid out
  along the last axis, leading axes untouched (a sharded batch axis stays
  sharded). Same rng collection as ``nn.Dropout`` ('dropout').
  """
  rate: float
  bits: int

  @nn.compact
  def __call__(self, x, deterministic: bool):
    if deterministic or self.rate == 0.0:
      return x
    scale = 2 ** self.bits
    threshold = round(self.rate * scale)
    if threshold >= scale:  # the rate rounds to 1: nothing is kept
      return jnp.zeros_like(x)
    keep_prob = 1.0 - threshold / scale
    per = 32 // self.bits
    last = x.shape[-1]
    words = jax.random.bits(self.make_rng("dropout"),
                            x.shape[:-1] + (-(-last // per),), jnp.uint32)
    u = jax.lax.bitcast_convert_type(
        words, jnp.uint8 if self.bits == 8 else jnp.uint16)
    u = u.reshape(x.shape[:-1] + (-1,))[..., :last]
    return jax.lax.select(u >= threshold, x / jnp.asarray(keep_prob, x.dtype),
                          jnp.zeros_like(x))


def dropout(cfg: PLMConfig, rate: float, name: str | None = None
            ) -> nn.Module:
  """The PLM's dropout at ``rate``: flax's ``nn.Dropout`` (32 bits, the
  default, exactly as before the option existed) or ``LowBitDropout``."""
  if cfg.dropout_bits == 32:
    return nn.Dropout(rate, name=name)
  return LowBitDropout(rate, cfg.dropout_bits, name=name)


def _dense_params(module) -> tuple[jax.Array, jax.Array]:
  """(kernel, bias) params of a MultiAxisDense-shaped ``module``."""
  kernel = module.param(
      "kernel", normal_init(module.init_std, module.kernel_names),
      (*module.in_shape, *module.out_shape), module.param_dtype)
  bias = module.param("bias", zeros_init(module.bias_names),
                      module.out_shape, module.param_dtype)
  return kernel, bias


class MultiAxisDense(nn.Module):
  """Dense layer with multi-axis kernels, e.g. [H, heads, kv] or [heads, kv, H].

  Contracts the last `len(in_shape)` input axes. `nn.DenseGeneral` initialises
  a flattened 2-D kernel and boxes it with the N-D logical names, which breaks
  the init-time sharding constraint under a mesh; this layer initialises the
  kernel in its real shape.
  """
  in_shape: tuple[int, ...]
  out_shape: tuple[int, ...]
  kernel_names: tuple[Any, ...]
  bias_names: tuple[Any, ...]
  init_std: float
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    n_in = len(self.in_shape)
    if tuple(x.shape[-n_in:]) != tuple(self.in_shape):
      raise ValueError(f"{self.name}: input {x.shape} does not end with"
                       f" {self.in_shape}")
    kernel, bias = _dense_params(self)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias,
                                              dtype=self.dtype)
    y = jax.lax.dot_general(
        x, kernel, (((tuple(range(x.ndim - n_in, x.ndim))),
                     tuple(range(n_in))), ((), ())))
    return y + bias


class DenseParams(MultiAxisDense):
  """A MultiAxisDense's params alone: returns (kernel, bias), same names,
  shapes and initial values (the fused QKV projection reads three)."""

  @nn.compact
  def __call__(self):  # pylint: disable=arguments-differ
    return _dense_params(self)


class SubLayerOutput(nn.Module):
  """dense -> dropout -> residual add -> LayerNorm (HF `*Output`)."""
  config: PLMConfig
  in_shape: tuple[int, ...]
  kernel_names: tuple[Any, ...]
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, residual, *, deterministic: bool):
    cfg = self.config
    y = MultiAxisDense(self.in_shape, (cfg.hidden_size,), self.kernel_names,
                       ("embed",), cfg.initializer_range, self.dtype,
                       self.param_dtype, name="dense")(x)
    y = dropout(cfg, cfg.hidden_dropout)(y, deterministic=deterministic)
    y = layer_norm(cfg, self.dtype, self.param_dtype, name="LayerNorm")(
        y + residual)
    return nn.with_logical_constraint(y, ACT_SPEC)


class SelfAttention(nn.Module):
  """Multi-head self-attention with an additive padding bias."""
  config: PLMConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, bias, *, deterministic: bool, prefix=None):
    cfg = self.config
    spec = ("batch", "length", "heads", "kv")
    q, k, v = (nn.with_logical_constraint(t, spec)  # [B, L, N, D] each
               for t in self._qkv(x))
    if prefix is not None:
      # [B, N, K, D] -> [B, K, N, D], in front of the text keys / values.
      kp, vp = (jnp.swapaxes(t, 1, 2).astype(k.dtype) for t in prefix)
      k = nn.with_logical_constraint(jnp.concatenate([kp, k], axis=1), spec)
      v = nn.with_logical_constraint(jnp.concatenate([vp, v], axis=1), spec)
    if cfg.attention_impl != "xla":
      if not deterministic and cfg.attention_dropout > 0:
        raise ValueError(
            f"attention_impl={cfg.attention_impl!r} has no attention-"
            "probability dropout: "
            "train it with attention_dropout=0 (model.plm.attention_dropout)")
      ctx = _fused_attention(cfg, q, k, v, bias)
    else:
      q = q * jnp.asarray(cfg.head_dim ** -0.5, q.dtype)
      scores = jnp.einsum("bqnd,bknd->bnqk", q, k)  # [B, N, L, L]
      scores = scores.astype(jnp.float32) + bias
      probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
      probs = dropout(cfg, cfg.attention_dropout)(
          probs, deterministic=deterministic)
      ctx = jnp.einsum("bnqk,bknd->bqnd", probs, v)  # [B, L, N, D]
    ctx = nn.with_logical_constraint(ctx, spec)
    return SubLayerOutput(cfg, (cfg.num_heads, cfg.head_dim),
                          ("heads", "kv", "embed"),
                          self.dtype, self.param_dtype, name="output")(
                              ctx, x, deterministic=deterministic)

  def _qkv(self, x):
    """(q, k, v) [B, L, N, D]: three matmuls, or one (config.fused_qkv) on
    the three kernels concatenated (the params stay query / key / value)."""
    cfg = self.config
    args = ((cfg.hidden_size,), (cfg.num_heads, cfg.head_dim),
            ("embed", "heads", "kv"), ("heads", "kv"), cfg.initializer_range,
            self.dtype, self.param_dtype)
    names = ("query", "key", "value")
    if not cfg.fused_qkv:
      return tuple(MultiAxisDense(*args, name=n)(x) for n in names)
    kernels, biases = zip(*(DenseParams(*args, name=n)() for n in names))
    kernel = jnp.stack(kernels, axis=1)  # [H, 3, N, D]
    bias = jnp.stack(biases)  # [3, N, D]
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias,
                                              dtype=self.dtype)
    y = jnp.einsum("blh,hcnd->blcnd", x, kernel) + bias
    return y[:, :, 0], y[:, :, 1], y[:, :, 2]


def _fused_attention(cfg: PLMConfig, q, k, v, bias):
  """``jax.nn.dot_product_attention`` of q, k, v [B, L, N, D] with the
  [B, 1, 1, K] padding bias: default implementation ('fused') or cuDNN's
  ('cudnn', whose bias must span the query length: broadcast to
  [B, 1, L, K])."""
  bias = bias.astype(q.dtype)
  impl = None
  if cfg.attention_impl == "cudnn":
    impl = "cudnn"
    bias = jnp.broadcast_to(bias, bias.shape[:2] + (q.shape[1],)
                            + bias.shape[3:])
  return jax.nn.dot_product_attention(q, k, v, bias=bias,
                                      scale=cfg.head_dim ** -0.5,
                                      implementation=impl)


class Intermediate(nn.Module):
  """Feed-forward expansion H -> mlp with the activation (HF naming)."""
  config: PLMConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    h = nn.Dense(cfg.intermediate_size, dtype=self.dtype,
                 param_dtype=self.param_dtype,
                 kernel_init=normal_init(cfg.initializer_range,
                                         ("embed", "mlp")),
                 bias_init=zeros_init(("mlp",)), name="dense")(x)
    return nn.with_logical_constraint(activation(cfg.hidden_act)(h),
                                      ("batch", "length", "mlp"))


class TransformerLayer(nn.Module):
  """One post-LN layer: attention block then feed-forward block."""
  config: PLMConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, bias, deterministic: bool = True, prefix=None):
    cfg = self.config
    x = SelfAttention(cfg, self.dtype, self.param_dtype, name="attention")(
        x, bias, deterministic=deterministic, prefix=prefix)
    h = Intermediate(cfg, self.dtype, self.param_dtype,
                     name="intermediate")(x)
    return SubLayerOutput(cfg, (cfg.intermediate_size,), ("mlp", "embed"),
                          self.dtype,
                          self.param_dtype, name="output")(
                              h, x, deterministic=deterministic)


class Encoder(nn.Module):
  """The stack `layer_0 .. layer_{n-1}`, optionally rematerialised."""
  config: PLMConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, x, bias, *, deterministic: bool, prefix=None,
               output_hidden_states: bool = False):
    """x [B, L, H] -> the last layer's output (and every layer's, in order).

    ``prefix``: None or one (key, value) pair per layer.
    """
    # Argument 0 is the module itself, so `deterministic` is static arg 3.
    layer_cls = (nn.remat(TransformerLayer, static_argnums=(3,))
                 if self.remat else TransformerLayer)
    hidden = [x]
    for i in range(self.config.num_layers):
      layer = layer_cls(self.config, self.dtype, self.param_dtype,
                        name=f"layer_{i}")
      if prefix is None:
        x = layer(x, bias, deterministic)
      else:
        x = layer(x, bias, deterministic, prefix[i])
      hidden.append(x)
    if output_hidden_states:
      return x, tuple(hidden)
    return x


def attention_bias(attention_mask: jax.Array, dtype: Dtype) -> jax.Array:
  """[B, L] padding mask -> [B, 1, 1, L] float32 additive bias.

  Masked keys get the most negative finite value of the compute dtype. A fully
  padded row then has equal scores everywhere and softmax stays finite
  (uniform) instead of producing NaN.
  """
  neg = jnp.asarray(jnp.finfo(dtype).min, jnp.float32)
  keep = attention_mask.astype(bool)[:, None, None, :]
  return jnp.where(keep, jnp.float32(0.0), neg)
