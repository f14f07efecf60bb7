"""Shared config pieces: variant-argument parsing, mesh and sharding.

The dataset names live in `experiments.configs.data.DATASETS` (from the
data layer's reader registry, `flip_jax.data.sources.dataset_names`).
"""
from __future__ import annotations

import ml_collections as mlc

from flip_jax import sharding_rules


# PRNG implementation of the run's on-device keys (dropout, NCE noise; the
# data masking is drawn on the host). 'threefry2x32': the same bits on every
# backend and mesh (bitwise resume and the 8-device == 1-device tests rely on
# it). 'rbg' / 'unsafe_rbg': random bits from XLA's RngBitGenerator, the
# accelerator's own generator (JAX's fast choice on TPUs; 10% slower on a
# 2-core CPU, see BUILD.md); the bits differ between backends. A run
# resumes only with the impl it started with.
PRNG_IMPL = "threefry2x32"

# Rows per micro-batch of the CPU presets' PLM steps: on a 2-core CPU
# 16-row micro-batches are the fastest (RESULTS.md, micro-batch sweep).
CPU_MICRO_BATCH = 16


def parse_arg(arg: str | None, **defaults) -> mlc.ConfigDict:
  """Parses 'k=v,k2=v2' variant strings; unknown keys are an error."""
  out = mlc.ConfigDict(defaults)
  if not arg:
    return out
  for item in arg.split(","):
    if not item:
      continue
    if "=" not in item:
      raise ValueError(f"config variant {item!r}: expected key=value")
    key, value = item.split("=", 1)
    if key not in defaults:
      raise ValueError(
          f"config variant key {key!r} unknown; known: {sorted(defaults)}")
    default = defaults[key]
    if isinstance(default, bool):
      value = value.lower() in ("1", "true", "yes")
    elif isinstance(default, int):
      value = int(value)
    elif isinstance(default, float):
      value = float(value)
    out[key] = value
  return out


def skeleton(task: str, *, seed: int = 2012) -> mlc.ConfigDict:
  """The fields every config has (its task, seed, PRNG, mesh and logical
  axis rules); a method's config adds its sections."""
  cfg = mlc.ConfigDict()
  cfg.task = task
  cfg.seed = seed
  cfg.prng_impl = PRNG_IMPL
  cfg.mesh = mesh_config()
  cfg.logical_axis_rules = logical_axis_rules()
  return cfg


def check_preset(preset: str, presets) -> None:
  """A preset the method has (its config's ``PRESETS``)."""
  if preset not in presets:
    raise ValueError(f"preset {preset!r}: expected one of {tuple(presets)}")


def preset_row(table: dict, preset: str, dataset: str) -> mlc.ConfigDict:
  """A method's row of its preset table (``{preset: {field: value}}``),
  where a value given as ``{'synthetic': a, 'other': b}`` depends on the
  dataset: the one place a config reads its preset."""
  return mlc.ConfigDict({
      k: (v["synthetic" if dataset == "synthetic" else "other"]
          if isinstance(v, dict) else v)
      for k, v in table[preset].items()})


def mesh_config() -> list:
  """(axis, size) pairs; -1 = the remaining devices."""
  return [("data", -1), ("fsdp", 1), ("tensor", 1)]


def logical_axis_rules() -> list:
  return [list(r) for r in sharding_rules.DEFAULT_RULES]


def train_config(*, batch_size: int, num_epochs: int, max_steps: int = -1,
                 eval_every_steps: int = -1, eval_batch_size: int = 512,
                 patience: int = 3, patience_unit: str = "evals",
                 micro_batch_size: int = 0) -> mlc.ConfigDict:
  """``config.train``: the shared loop's settings, the same in every task."""
  return mlc.ConfigDict(dict(
      # Global batch over all devices and hosts.
      batch_size=batch_size,
      # Rows per micro-batch: the step accumulates the grads of batch_size /
      # micro_batch_size micro-batches (same loss and gradient; less memory,
      # and faster per example on CPUs). 0 = the whole batch in one pass.
      micro_batch_size=micro_batch_size,
      num_epochs=num_epochs,
      # Cap on optimizer steps; -1 = num_epochs epochs.
      max_steps=max_steps,
      # Evaluate on valid every N steps (and at the last); -N = N times
      # per epoch (-1 = each epoch).
      # Tasks without a valid split (pretraining) never evaluate.
      eval_every_steps=eval_every_steps,
      eval_batch_size=eval_batch_size,
      # Early stopping: `patience` evaluations without a better valid AUC
      # (patience_unit 'evals'), or `patience` epochs whatever the cadence
      # ('epochs': the official codes count epochs).
      patience=patience,
      patience_unit=patience_unit,
  ))


def ckpt_config(*, every_steps: int = -1, keep: int = 2,
                async_save: bool = False, init_from: str = "",
                keep_regex=(), drop_regex=(), allow_missing_regex=()
                ) -> mlc.ConfigDict:
  """``config.ckpt``: checkpoints and the init-from rule, every task."""
  return mlc.ConfigDict(dict(
      # Save every N steps; -1 = at evaluations (and the last step) only.
      every_steps=every_steps,
      keep=keep,
      async_save=async_save,
      # Another run's workdir to take params from (first start only; the
      # workdir's own checkpoint wins).
      init_from=init_from,
      # Step of init_from to load (-1 = latest).
      init_step=-1,
      # Params taken from init_from / dropped (regexes over 'a/b/c' paths).
      keep_regex=list(keep_regex),
      drop_regex=list(drop_regex),
      # Fresh params that init_from's checkpoint may lack.
      allow_missing_regex=list(allow_missing_regex),
  ))


def optim_config(*, name: str, lr: float, weight_decay: float,
                 schedule: str = "constant", epochs=1,
                 decay_mask: str = "all") -> mlc.ConfigDict:
  """``config.optim`` (flip_jax.optim): the fields every task's optimizer
  has; a config then adds its param groups, freezing or extras."""
  return mlc.ConfigDict(dict(
      name=name, lr=lr, weight_decay=weight_decay,
      b1=0.9, b2=0.999, eps=1e-8,
      # 'all' decays every param, as the official AdamW does;
      # 'no_bias_norm' spares biases and LayerNorms.
      decay_mask=decay_mask,
      # Global-norm clip; None = off (typed: --config.optim.grad_clip=1.0).
      grad_clip=mlc.config_dict.placeholder(float),
      # (regex, lr) pairs; first match wins, e.g. [("^plm/", 5e-5)].
      param_groups=[],
      # Regexes of params kept frozen.
      freeze=[],
      # `epochs` may be a FieldReference (cosine_epoch follows train epochs).
      schedule=mlc.ConfigDict({"name": schedule, "epochs": epochs,
                               "warmup_steps": 0}),
  ))
