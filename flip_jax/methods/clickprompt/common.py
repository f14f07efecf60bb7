"""What ClickPrompt's tasks share: config freezing, checks, PLM, data, init.

The data (prepared splits, the "<field> is <value>." text, tokenisation) and
the PLM loader are the shared ones (``flip_jax.train.inputs``): one text
builder and one tokenised cache serve FLIP and ClickPrompt (spec A2).
"""
from __future__ import annotations

import os

import jax
import ml_collections as mlc
import numpy as np
from absl import logging

from flip_jax import jsonio
from flip_jax import tree_paths
from flip_jax.methods.clickprompt import model as model_lib
from flip_jax.methods.clickprompt import prompt as prompt_lib
from flip_jax.models import plm as plm_lib
from flip_jax.train import inputs
from flip_jax.train import validate

CTR_INITS = ("xavier", "zoo")
# Sections of a pretraining run's config a finetuning run must share.
ARCH_FIELDS = ("num_prompt", "fusion", "shift_positions")


def freeze(mode: str, model_cfg, cp_cfg, feature_map, plm_config,
           max_masked: int = 1) -> model_lib.ClickPromptConfig:
  """The model's frozen config (the model boundary).

  Args:
    mode: a ``model_lib.MODES`` key.
    model_cfg: the (resolved) ``model`` section.
    cp_cfg: the (resolved) ``clickprompt`` section.
    feature_map: the run's FeatureMap.
    plm_config: the PLM's PLMConfig (None without a PLM).
    max_masked: the MLM head's masked positions per row (pretraining).
  """
  uses_q, uses_plm = model_lib.MODES[mode][:2]
  uses_q = uses_q and not (mode == "pretrain" and cp_cfg.fusion == "none")
  return model_lib.ClickPromptConfig(
      mode=mode,
      ctr=inputs.ctr_config(model_cfg, feature_map) if uses_q else None,
      plm=plm_config if uses_plm else None, num_prompt=cp_cfg.num_prompt,
      fusion=cp_cfg.fusion, prompt_usage=cp_cfg.prompt_usage,
      pooler=cp_cfg.pooler, weighted_add=cp_cfg.alpha.weighted,
      alpha_learnable=cp_cfg.alpha.learnable, alpha_init=cp_cfg.alpha.init,
      shift_positions=cp_cfg.shift_positions, lm_tied=cp_cfg.lm_tied,
      mlm_max_masked=max_masked, dtype=inputs.DTYPES[model_cfg.dtype],
      generator_dtype=inputs.DTYPES[cp_cfg.generator_dtype],
      plm_remat=model_cfg.plm.remat)


def config_errors(config, mode: str) -> list[str]:
  """Problems with ``model.*`` and ``clickprompt.*`` (one line each)."""
  errors = inputs.model_errors(config.model)
  c = config.clickprompt
  validate.one_of(errors, "clickprompt.fusion", c.fusion, model_lib.FUSIONS)
  validate.one_of(errors, "clickprompt.prompt_usage", c.prompt_usage,
                  model_lib.PROMPT_USAGES)
  validate.one_of(errors, "clickprompt.pooler", c.pooler, prompt_lib.POOLERS)
  validate.one_of(errors, "clickprompt.generator_dtype", c.generator_dtype,
                  tuple(inputs.DTYPES))
  validate.one_of(errors, "clickprompt.ctr_init", c.ctr_init, CTR_INITS)
  validate.positive(errors, "clickprompt.num_prompt", c.num_prompt)
  if mode != "pretrain":
    validate.one_of(errors, "clickprompt.mode", mode, model_lib.FINETUNE_MODES)
  return errors


# Biases and LayerNorm scales of every part (the official no-decay group).
BIAS_LN_REGEX = r"(^|/)bias(_\d+)?$|(^|/)LayerNorm/scale$"


def resolve_optimizer(config, mode: str) -> None:
  """Turns ``optim.groups`` and the quirk flag into ``optim.param_groups``.

  Spec A8: the 'plm' group (PLM and its heads) at its own lr, everything
  else at ``optim.lr`` (the 'ctr' group: CTR model, generator, CTR head);
  a group lr of 0 freezes the group (``optim.freeze``). With
  ``optim.reproduce_bias_ln_lr_quirk`` every bias / LayerNorm parameter
  trains at ``optim.quirk_lr`` instead, as the official optimizer does.
  Groups of parts the mode lacks (the PLM in ctr_only) are left out. The
  resolved lists are what the run's config.json records.
  """
  o = config.optim
  uses_plm = model_lib.MODES[mode][1]
  groups = [tuple(g) for g in o.param_groups]
  named = {name for *_, name in (g for g in groups if len(g) == 3)}
  if o.reproduce_bias_ln_lr_quirk and "bias_ln_quirk" not in named:
    groups.insert(0, (BIAS_LN_REGEX, o.quirk_lr, "bias_ln_quirk"))
  freeze = list(o.freeze)
  for name, g in o.groups.items():
    if (name == "plm" and not uses_plm) or name in named:
      continue
    if g.lr == 0:
      if g.regex not in freeze:
        freeze.append(g.regex)
    else:
      groups.append((g.regex, g.lr, name))
  o.param_groups = groups
  o.freeze = freeze


def check_positions(cp: model_lib.ClickPromptConfig, max_length: int) -> None:
  """Text length + prompt slots must fit the PLM's position table (A12 #7)."""
  if cp.plm is None:
    return
  room = plm_lib.bert.max_length(cp.plm)
  if max_length + cp.prompt_positions > room:
    raise ValueError(
        f"data.max_length={max_length} + {cp.prompt_positions} prompt "
        f"positions (clickprompt.num_prompt, shift_positions) exceeds the "
        f"{room} positions of this {cp.plm.model_type} checkpoint: lower "
        "data.max_length or clickprompt.num_prompt")


def load_plm(model_cfg, *, with_head: bool = False):
  """(module, params, tokenizer, report): params {'encoder', 'mlm_head'}
  with the head (from the checkpoint, or fresh and reported)."""
  return inputs.load_plm(model_cfg, with_mlm_head=with_head,
                              return_report=True)


def xavier_reinit(tree, seed: int):
  """Host copy of a CTR param tree with ClickPrompt's ``weight_init``.

  Every 2-D weight (Linear kernels, embedding tables) gets torch's
  Xavier-normal std sqrt(2 / (rows + cols)); every 1-D ``bias*`` param 0;
  anything else (3-D AutoInt / CIN kernels, scalars) keeps its zoo init.

  Returns:
    (new tree of numpy arrays, list of the paths left unchanged).
  """
  flat = tree_paths.flatten(jax.device_get(tree))
  out, kept = {}, []
  for i, (path, value) in enumerate(sorted(flat.items())):
    a = np.asarray(value)
    name = path.rsplit("/", 1)[-1]
    if a.ndim == 2:
      rng = np.random.default_rng([seed, i])
      std = np.sqrt(2.0 / (a.shape[0] + a.shape[1]))
      out[path] = (rng.standard_normal(a.shape) * std).astype(a.dtype)
    elif a.ndim == 1 and name.startswith("bias"):
      out[path] = np.zeros_like(a)
    else:
      out[path] = a
      kept.append(path)
  return tree_paths.unflatten(out), kept


def resolve_sections(config) -> tuple[mlc.ConfigDict, mlc.ConfigDict]:
  """(model, clickprompt) sections; with init_from, the pretraining run's
  architecture (backbone, PLM, K, fusion, position shift) wins."""
  model = mlc.ConfigDict(config.model.to_dict())
  cp = mlc.ConfigDict(config.clickprompt.to_dict())
  src = config.ckpt.init_from
  if not src:
    return model, cp
  path = os.path.join(src, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"ckpt.init_from={src!r}: no config.json there; "
                            "is it a PA-MLM workdir?")
  pre = jsonio.read_json(path)
  if pre.get("task") != "clickprompt_pretrain":
    raise ValueError(f"ckpt.init_from={src!r} is a {pre.get('task')!r} run, "
                     "not clickprompt_pretrain")
  for part in ("ctr", "plm"):
    if pre["model"][part] != model[part].to_dict():
      logging.info("init_from: using the PA-MLM run's model.%s %s", part,
                   pre["model"][part])
    model[part] = mlc.ConfigDict(pre["model"][part])
  for key in ARCH_FIELDS:
    if pre["clickprompt"][key] != cp[key]:
      logging.info("init_from: using the PA-MLM run's clickprompt.%s=%r",
                   key, pre["clickprompt"][key])
      cp[key] = pre["clickprompt"][key]
  return model, cp


def log_sizes(params, cp: model_lib.ClickPromptConfig) -> dict[str, int]:
  """Parameter counts per top-level part (logged; the generator's too)."""
  sizes = {k: int(sum(np.size(x) for x in jax.tree.leaves(v)))
           for k, v in params.items()}
  for k, v in sorted(sizes.items()):
    logging.info("params %-18s %12d", k, v)
  if "prompt_generator" in sizes:
    out = int(sum(np.size(x) for x in jax.tree.leaves(
        params["prompt_generator"]["out"])))
    logging.info("prompt generator: %.1fM parameters (K=%d; its output "
                 "layer %.1fM)", sizes["prompt_generator"] / 1e6,
                 cp.num_prompt, out / 1e6)
  return sizes
