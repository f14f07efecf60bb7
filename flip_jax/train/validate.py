"""Config checks done before any work (data, compile, files).

``validate(config, task)`` checks the shared loop's fields, then asks the
task for its own (``task.config_errors()``); every problem is one line
naming the field and what is allowed, all of them in one ``ConfigError``.
"""
from __future__ import annotations

import math

import jax

from flip_jax import optim
from flip_jax.train import state as state_lib

DTYPES = ("float32", "bfloat16", "float16")


class ConfigError(ValueError):
  """One or more config fields have values the run cannot use."""


def one_of(errors: list[str], name: str, value, allowed) -> None:
  """Appends an error unless ``value`` is in ``allowed``."""
  if value not in allowed:
    errors.append(f"{name}={value!r}: expected one of {list(allowed)}")


def positive(errors: list[str], name: str, value, *, zero_ok=False) -> None:
  ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
      value >= 0 if zero_ok else value > 0) and math.isfinite(value)
  if not ok:
    errors.append(f"{name}={value!r}: expected a number "
                  f"{'>= 0' if zero_ok else '> 0'}")


def _leaves(node, prefix: str = ""):
  """(dotted name, value) of every field under a ConfigDict / dict."""
  for key, value in node.items():
    name = f"{prefix}{key}"
    if hasattr(value, "items"):
      yield from _leaves(value, name + ".")
    else:
      yield name, value


def rate_errors(config) -> list[str]:
  """Every dropout rate (a field named ``*dropout``, in any section of any
  task's config) must be None (the model's default) or a number in
  [0, 1)."""
  errors = []
  for name, value in _leaves(config):
    if not name.rsplit(".", 1)[-1].endswith("dropout") or value is None:
      continue
    if not (isinstance(value, (int, float)) and not isinstance(value, bool)
            and 0 <= value < 1):
      errors.append(f"{name}={value!r}: expected a number in [0, 1)")
  return errors


def _data_parallel_size(config) -> int:
  """Devices the batch axis is split over (mesh axes of logical 'batch')."""
  axes = dict((a, s) for a, s in config.mesh)
  known = 1
  for a, s in axes.items():
    known *= s if s > 0 else 1
  rest = max(jax.device_count() // max(known, 1), 1)
  sizes = {a: (s if s > 0 else rest) for a, s in axes.items()}
  batch_axes = ()
  for name, target in config.logical_axis_rules:
    if name == "batch":
      batch_axes = (target,) if isinstance(target, str) else tuple(target or ())
  size = 1
  for a in batch_axes:
    size *= sizes.get(a, 1)
  return size


def shared_errors(config) -> list[str]:
  """Problems with the fields every task reads."""
  errors: list[str] = []
  t = config.train
  positive(errors, "train.batch_size", t.batch_size)
  positive(errors, "train.micro_batch_size", t.micro_batch_size,
           zero_ok=True)
  positive(errors, "train.num_epochs", t.num_epochs)
  positive(errors, "train.eval_batch_size", t.eval_batch_size)
  positive(errors, "train.patience", t.patience)
  one_of(errors, "train.patience_unit", t.patience_unit, ("evals", "epochs"))
  positive(errors, "log_every_steps", config.log_every_steps)
  for name, v in (("train.max_steps", t.max_steps),
                  ("ckpt.every_steps", config.ckpt.every_steps)):
    if not isinstance(v, int) or (v < 1 and v != -1):
      errors.append(f"{name}={v!r}: expected a positive integer or -1")
  if not isinstance(t.eval_every_steps, int) or t.eval_every_steps == 0:
    errors.append(f"train.eval_every_steps={t.eval_every_steps!r}: expected "
                  "a positive step interval or -N (N evaluations per epoch)")
  if (isinstance(t.batch_size, int) and isinstance(t.micro_batch_size, int)
      and 0 < t.micro_batch_size < t.batch_size
      and t.batch_size % t.micro_batch_size):
    errors.append(f"train.micro_batch_size={t.micro_batch_size} does not "
                  f"divide train.batch_size={t.batch_size}")
  if isinstance(t.batch_size, int) and t.batch_size > 0:
    dp = _data_parallel_size(config)
    if t.batch_size % dp:
      errors.append(f"train.batch_size={t.batch_size} is not divisible by "
                    f"the {dp} data-parallel devices of config.mesh")
    mb = t.micro_batch_size
    if isinstance(mb, int) and 0 < mb < t.batch_size and mb % dp:
      errors.append(f"train.micro_batch_size={mb} is not divisible by the "
                    f"{dp} data-parallel devices of config.mesh")
  one_of(errors, "prng_impl", config.prng_impl, state_lib.PRNG_IMPLS)
  one_of(errors, "optim.name", config.optim.name, optim.OPTIMIZERS)
  one_of(errors, "optim.schedule.name", config.optim.schedule.name,
         optim.SCHEDULES)
  one_of(errors, "optim.decay_mask", config.optim.decay_mask,
         optim.DECAY_MASKS)
  positive(errors, "optim.lr", config.optim.lr, zero_ok=True)
  return errors + rate_errors(config)


def validate(config, task) -> None:
  """Raises ConfigError listing every problem (shared, then the task's)."""
  # (a task may check a field the shared checks cover: one line each)
  errors = list(dict.fromkeys(shared_errors(config)
                              + list(task.config_errors())))
  if errors:
    raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
