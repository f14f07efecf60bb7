"""Shared Flax layers with PyTorch-parity initialisation.

The official FLIP code builds its networks from PyTorch / deepctr-torch
layers.  Reproducing it needs three details that differ from Flax defaults
(FLIP.md 3.1):

* a new ``torch.nn.Linear`` draws weight *and* bias from U(±1/sqrt(fan_in));
  `torch_uniform` / `TorchDense` reproduce that;
* deepctr's DNN draws weights from Normal(0, init_std=1e-4) and keeps the
  PyTorch default for the biases; `MLP` does that;
* PyTorch LayerNorm uses eps=1e-5 (Flax: 1e-6); `layer_norm` sets it.

Every parameter carries logical axis names (see `flip_jax.sharding`).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

Initializer = Callable[..., jax.Array]

# PyTorch's LayerNorm / BatchNorm epsilon.
TORCH_LN_EPS = 1e-5
TORCH_BN_EPS = 1e-5
# PyTorch BatchNorm momentum 0.1 == Flax momentum 0.9.
TORCH_BN_MOMENTUM = 0.9
# deepctr-torch DNN weight init_std.
DNN_INIT_STD = 1e-4


def torch_uniform(fan_in: int) -> Initializer:
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch.nn.Linear's default init.

  Args:
    fan_in: input width of the layer (also used for its bias).

  Returns:
    A Flax initialiser usable for kernels and biases of any shape.
  """
  if fan_in <= 0:
    raise ValueError(f"torch_uniform: fan_in must be positive, got {fan_in}")
  bound = 1.0 / float(fan_in) ** 0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def torch_linear(fan_in: int) -> Initializer:
  """Alias of `torch_uniform` (kernel and bias of a torch Linear)."""
  return torch_uniform(fan_in)


def normal(std: float) -> Initializer:
  """Normal(0, std) initialiser (PyTorch ``nn.init.normal_``)."""
  return nn.initializers.normal(stddev=std)


def layer_norm(name: str | None = None, dtype: Any = jnp.float32) -> nn.Module:
  """A LayerNorm with PyTorch's eps=1e-5 (use for every non-PLM LayerNorm)."""
  return nn.LayerNorm(epsilon=TORCH_LN_EPS, dtype=dtype, name=name)


class TorchDense(nn.Module):
  """Dense layer initialised like ``torch.nn.Linear`` unless told otherwise.

  Attributes:
    features: output width.
    use_bias: whether to add a bias.
    kernel_init: kernel initialiser; None = U(±1/sqrt(fan_in)).
    bias_init: bias initialiser; None = U(±1/sqrt(fan_in)).
    axes: logical names of the kernel's (input, output) axes.
    dtype: computation dtype (params stay float32).
  """
  features: int
  use_bias: bool = True
  kernel_init: Initializer | None = None
  bias_init: Initializer | None = None
  axes: tuple[str | None, str | None] = ("hidden_in", "hidden")
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fan_in = x.shape[-1]
    k_init = self.kernel_init or torch_uniform(fan_in)
    kernel = self.param("kernel",
                        nn.with_logical_partitioning(k_init, self.axes),
                        (fan_in, self.features), jnp.float32)
    y = jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      b_init = self.bias_init or torch_uniform(fan_in)
      bias = self.param("bias", nn.with_logical_partitioning(
          b_init, (self.axes[1],)), (self.features,), jnp.float32)
      y = y + bias.astype(self.dtype)
    return y


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
    "linear": lambda x: x,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """Looks an activation up in `ACTIVATIONS` with a clear error."""
  if name not in ACTIVATIONS:
    raise ValueError(
        f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


class MLP(nn.Module):
  """deepctr-torch ``DNN``: Linear -> [BN] -> act -> dropout, per layer.

  Weights ~ Normal(0, init_std); biases keep torch's U(±1/sqrt(fan_in)).
  Submodules are named ``dense_0``, ``dense_1``, ... (and ``bn_i``).

  Attributes:
    hidden: widths of the hidden layers.
    act: activation name (see `ACTIVATIONS`).
    dropout: dropout rate after each activation.
    use_bn: BatchNorm after each Linear (torch momentum 0.1, eps 1e-5).
    init_std: std of the weight init.
    dtype: computation dtype.
  """
  hidden: Sequence[int]
  act: str = "relu"
  dropout: float = 0.0
  use_bn: bool = False
  init_std: float = DNN_INIT_STD
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
    fn = activation(self.act)
    for i, width in enumerate(self.hidden):
      x = TorchDense(width, kernel_init=normal(self.init_std), dtype=self.dtype,
                     name=f"dense_{i}")(x)
      if self.use_bn:
        x = nn.BatchNorm(use_running_average=deterministic,
                         momentum=TORCH_BN_MOMENTUM, epsilon=TORCH_BN_EPS,
                         dtype=self.dtype, name=f"bn_{i}")(x)
      x = fn(x)
      if self.dropout > 0:
        x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
    return x
