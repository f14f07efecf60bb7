"""Optimiser builder: schedules, per-regex parameter groups, freeze and decay.

Everything is keyed on '/'-joined parameter paths such as
``plm/encoder/layer_0/attention/query/kernel`` (see
`flip_jax.tree_paths.param_paths`).

Optimiser config (an ``ml_collections.ConfigDict``; every field is required,
defaults live in the experiment configs):

  name          'adamw' (decoupled decay, == torch.optim.AdamW) or 'adam'
                (torch.optim.Adam: L2 term ``wd * p`` added to the gradient).
  lr            base learning rate of every parameter not in a group.
  weight_decay  decay coefficient (0 disables it).
  b1, b2, eps   Adam moments and epsilon (eps outside the sqrt, as torch).
  decay_mask    'all' (FLIP: decay LayerNorm, biases and embeddings too) or
                'no_bias_norm' (no decay on biases, norm scales/biases).
  grad_clip     None or a float: clip by global norm over trainable params.
  param_groups  list of (regex, lr) or (regex, lr, name); the first regex
                that `re.search`es a path wins. Each group gets the schedule
                shape of ``schedule`` scaled to its own lr.
  freeze        list of regexes; matching params get zero updates and no
                optimiser state.
  schedule      sub-config for `make_schedule`.

Schedule config: ``name`` in `SCHEDULES` plus the fields that name needs:

  constant              (none)
  cosine_epoch          epochs: lr * 1/2 (1 + cos(pi * e / epochs)) with
                        e = floor(step / steps_per_epoch) clipped to epochs;
                        torch CosineAnnealingLR(T_max=epochs) stepped per
                        epoch, eta_min 0, no warm-up (FLIP.md 5.8).
  cosine                warmup_steps: linear 0 -> lr over warmup_steps (0 =
                        none), then per-step cosine to 0 at total_steps.
  linear                warmup_steps: linear 0 -> lr, then linear to 0 at
                        total_steps (transformers' linear schedule).

``warmup_steps`` is a count of steps, or a float in (0, 1): that fraction of
total_steps (transformers' ``warmup_ratio``, as ClickPrompt's recipes give
it).
  linear_warmup_cosine  warmup_steps (>= 1), min_lr_ratio: linear 0 -> lr,
                        then cosine to lr * min_lr_ratio at total_steps.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax

# Also re-exported as optim.param_paths / optim.path_str (train/logging.py
# and tests use them); new code imports flip_jax.tree_paths.
from flip_jax.tree_paths import param_paths
from flip_jax.tree_paths import path_str

SCHEDULES = ("constant", "cosine_epoch", "cosine", "linear_warmup_cosine",
             "linear")
OPTIMIZERS = ("adamw", "adam")
DECAY_MASKS = ("all", "no_bias_norm")
DEFAULT_LABEL = "default"
FROZEN_LABEL = "frozen"

# Modules treated as normalisation layers by decay_mask=no_bias_norm: a path
# component containing "norm" (LayerNorm_0, attention_norm), or "ln",
# "ln_<x>", "<x>_ln" (ln_f, final_ln).
_NORM_RE = re.compile(r"(^|/)([^/]*norm[^/]*|ln|ln_[^/]*|[^/]*_ln)/",
                      re.IGNORECASE)


def _require(cfg, name: str, where: str):
  if name not in cfg:
    raise KeyError(f"{where}: required field {name!r} is missing "
                   f"(have {sorted(cfg.keys())})")
  return cfg[name]


def warmup_steps(cfg, total_steps: int, name: str) -> int:
  """``warmup_steps`` as steps: a count, or a fraction of total_steps."""
  w = _require(cfg, "warmup_steps", f"schedule({name})")
  if isinstance(w, float) and 0.0 < w < 1.0:
    return int(round(w * total_steps))
  if isinstance(w, float) and not w.is_integer():
    raise ValueError(f"schedule {name}: warmup_steps={w} must be a step "
                     "count or a fraction in (0, 1)")
  return int(w)


def make_schedule(cfg, *, base_lr: float, steps_per_epoch: int,
                  total_steps: int) -> optax.Schedule:
  """Builds a learning-rate schedule (see the module docstring).

  Args:
    cfg: schedule config with ``name`` and the fields that name needs.
    base_lr: peak learning rate.
    steps_per_epoch: optimiser steps per epoch (cosine_epoch).
    total_steps: last step of training (cosine, linear_warmup_cosine).

  Returns:
    An optax schedule: step (int array) -> learning rate.
  """
  name = _require(cfg, "name", "schedule")
  base_lr = float(base_lr)
  if name == "constant":
    return optax.constant_schedule(base_lr)
  if name == "cosine_epoch":
    epochs = int(_require(cfg, "epochs", "schedule(cosine_epoch)"))
    if epochs < 1 or steps_per_epoch < 1:
      raise ValueError(f"schedule cosine_epoch: epochs={epochs} and "
                       f"steps_per_epoch={steps_per_epoch} must be >= 1")

    def cosine_epoch(step):
      epoch = jnp.minimum(jnp.floor_divide(step, steps_per_epoch), epochs)
      return base_lr * 0.5 * (1.0 + jnp.cos(jnp.pi * epoch / epochs))
    return cosine_epoch
  if name == "linear":
    warmup = warmup_steps(cfg, total_steps, name)
    if total_steps <= warmup:
      raise ValueError(f"schedule linear: total_steps={total_steps} must "
                       f"exceed warmup_steps={warmup}")
    return optax.join_schedules(
        [optax.linear_schedule(0.0, base_lr, warmup),
         optax.linear_schedule(base_lr, 0.0, total_steps - warmup)],
        [warmup]) if warmup else optax.linear_schedule(base_lr, 0.0,
                                                       total_steps)
  if name in ("cosine", "linear_warmup_cosine"):
    warmup = warmup_steps(cfg, total_steps, name)
    if name == "linear_warmup_cosine":
      min_ratio = float(_require(cfg, "min_lr_ratio", f"schedule({name})"))
      if warmup < 1:
        raise ValueError("schedule linear_warmup_cosine: warmup_steps must be "
                         f">= 1, got {warmup} (use 'cosine' for none)")
    else:
      min_ratio = 0.0
    if total_steps <= warmup:
      raise ValueError(f"schedule {name}: total_steps={total_steps} must "
                       f"exceed warmup_steps={warmup}")
    if warmup == 0:
      return optax.cosine_decay_schedule(base_lr, total_steps, alpha=min_ratio)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=base_lr, warmup_steps=warmup,
        decay_steps=total_steps, end_value=base_lr * min_ratio)
  raise ValueError(f"schedule name {name!r} unknown; known: {SCHEDULES}")


def _compile(patterns, field: str) -> list[re.Pattern]:
  out = []
  for p in patterns or ():
    try:
      out.append(re.compile(p))
    except re.error as e:
      raise ValueError(f"optim.{field}: bad regex {p!r}: {e}") from e
  return out


def _groups(cfg) -> list[tuple[re.Pattern, float, str]]:
  """optim.param_groups -> [(compiled regex, lr, label)]."""
  out = []
  for i, group in enumerate(cfg.param_groups or ()):
    group = tuple(group)
    if len(group) not in (2, 3):
      raise ValueError(f"optim.param_groups[{i}] = {group!r}: expected "
                       "(regex, lr) or (regex, lr, name)")
    label = str(group[2]) if len(group) == 3 else f"group_{i}"
    if label in (DEFAULT_LABEL, FROZEN_LABEL) or label in [g[2] for g in out]:
      raise ValueError(f"optim.param_groups[{i}]: name {label!r} is reserved "
                       "or used twice")
    out.append((_compile([group[0]], f"param_groups[{i}]")[0],
                 float(group[1]), label))
  return out


def group_schedules(cfg, *, steps_per_epoch: int,
                    total_steps: int) -> dict[str, optax.Schedule]:
  """{label: schedule} for 'default' and every param group (not frozen)."""
  scheds = {DEFAULT_LABEL: make_schedule(
      cfg.schedule, base_lr=cfg.lr, steps_per_epoch=steps_per_epoch,
      total_steps=total_steps)}
  for _, lr, label in _groups(cfg):
    scheds[label] = make_schedule(cfg.schedule, base_lr=lr,
                                  steps_per_epoch=steps_per_epoch,
                                  total_steps=total_steps)
  return scheds


def current_lrs(cfg, step, *, steps_per_epoch: int,
                total_steps: int) -> dict[str, float]:
  """Learning rates at `step` for logging.

  Returns:
    {'train/lr': default lr, 'train/lr_<group>': lr of each param group}.
  """
  out = {}
  for label, sched in group_schedules(
      cfg, steps_per_epoch=steps_per_epoch, total_steps=total_steps).items():
    key = "train/lr" if label == DEFAULT_LABEL else f"train/lr_{label}"
    out[key] = float(sched(jnp.asarray(step)))
  return out


def param_labels(cfg, params) -> Any:
  """Pytree of labels ('frozen', a group label or 'default') like params.

  Raises:
    ValueError: a freeze or param_groups regex matches no parameter (a typo
      would otherwise silently train everything at the base lr).
  """
  freeze = _compile(cfg.freeze, "freeze")
  groups = _groups(cfg)
  paths = list(param_paths(params))
  for rx in freeze:
    if not any(rx.search(p) for p in paths):
      raise ValueError(f"optim.freeze regex {rx.pattern!r} matches no param; "
                       f"first paths: {paths[:5]}")
  for rx, _, label in groups:
    if not any(rx.search(p) for p in paths):
      raise ValueError(f"optim.param_groups {label} regex {rx.pattern!r} "
                       f"matches no param; first paths: {paths[:5]}")

  def label_of(path, _):
    p = path_str(path)
    if any(rx.search(p) for rx in freeze):
      return FROZEN_LABEL
    for rx, _, label in groups:
      if rx.search(p):
        return label
    return DEFAULT_LABEL
  return jax.tree_util.tree_map_with_path(label_of, params)


def decay_mask_fn(kind: str) -> Callable[[Any], Any] | None:
  """Callable params -> bool tree (True = decay), or None for 'all'."""
  if kind == "all":
    return None
  if kind != "no_bias_norm":
    raise ValueError(f"optim.decay_mask {kind!r} unknown; known: "
                     f"{DECAY_MASKS}")

  def mask(params):
    def decays(path, _):
      p = path_str(path)
      last = p.rsplit("/", 1)[-1]
      return not (last in ("bias", "scale") or _NORM_RE.search(p))
    return jax.tree_util.tree_map_with_path(decays, params)
  return mask


def _base_optimizer(cfg, schedule: optax.Schedule
                    ) -> optax.GradientTransformation:
  mask = decay_mask_fn(cfg.decay_mask)
  wd = float(cfg.weight_decay)
  if cfg.name == "adamw":
    return optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                       weight_decay=wd, mask=mask)
  if cfg.name == "adam":
    # torch.optim.Adam(weight_decay=wd): grad += wd * p before the moments.
    decay = (optax.add_decayed_weights(wd, mask) if wd else optax.identity())
    return optax.chain(decay,
                       optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
                       optax.scale_by_learning_rate(schedule))
  raise ValueError(f"optim.name {cfg.name!r} unknown; known: {OPTIMIZERS}")


def build_optimizer(cfg, *, steps_per_epoch: int,
                    total_steps: int) -> optax.GradientTransformation:
  """Builds the optimiser described by `cfg` (see the module docstring).

  Gradients of frozen params are zeroed first, then (optionally) clipped by
  the global norm of the remaining gradients, then each label's optimiser
  runs on its own params through `optax.multi_transform`.

  Args:
    cfg: optimiser config.
    steps_per_epoch: optimiser steps per epoch.
    total_steps: total optimiser steps of the run.

  Returns:
    An optax GradientTransformation over the params pytree.
  """
  scheds = group_schedules(cfg, steps_per_epoch=steps_per_epoch,
                           total_steps=total_steps)
  transforms = {label: _base_optimizer(cfg, s) for label, s in scheds.items()}
  transforms[FROZEN_LABEL] = optax.set_to_zero()
  labels = lambda params: param_labels(cfg, params)
  chain = []
  if cfg.freeze:
    frozen = lambda params: jax.tree.map(lambda l: l == FROZEN_LABEL,
                                         labels(params))
    chain.append(optax.masked(optax.set_to_zero(), frozen))
  if cfg.grad_clip is not None:
    clip = float(cfg.grad_clip)
    if not clip > 0 or math.isinf(clip):
      raise ValueError(f"optim.grad_clip must be None or > 0, got {clip}")
    chain.append(optax.clip_by_global_norm(clip))
  chain.append(optax.multi_transform(transforms, labels))
  return optax.chain(*chain) if len(chain) > 1 else chain[0]


def summarize_labels(cfg, params) -> Mapping[str, int]:
  """{label: number of scalar params} (for the start-up log)."""
  counts: dict[str, int] = {}
  for label, leaf in zip(jax.tree.leaves(param_labels(cfg, params)),
                         jax.tree.leaves(params)):
    counts[label] = counts.get(label, 0) + int(jnp.size(leaf))
  return counts
