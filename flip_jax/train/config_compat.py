"""Brings a ``config.json`` written by an older flip_jax up to today's layout.

The one place that knows old layouts; everything else reads fields
directly. Older runs kept the training settings in per-task sections
(``pretrain.batch_size``, ``finetune.num_epochs``, ``train.epochs`` with 0 =
per epoch, a top-level ``total_steps``) and had no ``task`` field; today
every task reads ``config.train`` (-1 = per epoch / no cap) and the loss
settings of CTR training from ``config.loss``. Fields added since get the
value that reproduces the old behaviour.
"""
from __future__ import annotations

import copy
from typing import Any

# Settings of the shared loop that older configs kept per task.
_TRAIN_FIELDS = ("batch_size", "micro_batch_size", "num_epochs", "max_steps",
                 "eval_every_steps", "eval_batch_size", "patience")
# Defaults for a loop setting an old task section did not have.
_TRAIN_DEFAULTS = {"micro_batch_size": 0, "max_steps": -1,
                   "eval_every_steps": -1, "eval_batch_size": 512,
                   "patience": 3}
_CKPT_DEFAULTS = {"every_steps": -1, "keep": 2, "async_save": False,
                  "init_from": "", "init_step": -1, "keep_regex": [],
                  "drop_regex": [], "allow_missing_regex": []}
_PLM_DEFAULTS = {"remat": False, "attention": "xla",
                 "attention_dropout": None, "dropout": None,
                 "num_layers": None, "dropout_bits": 32}


def infer_task(config: dict[str, Any]) -> str:
  """The task of a config that predates ``config.task``."""
  if "task" in config:
    return config["task"]
  if "pretrain" in config:
    return "flip_pretrain"
  if "finetune" in config:
    return "flip_finetune"
  if "recipe" in config:
    return "ctr"
  raise ValueError("config.json: no 'task' field and no pretrain / finetune "
                   "/ recipe section to infer it from")


def upgrade(config: dict[str, Any]) -> dict[str, Any]:
  """A copy of ``config`` (a plain dict) in today's layout.

  A config already in today's layout comes back unchanged.
  """
  c = copy.deepcopy(dict(config))
  c["task"] = infer_task(c)
  train = c.setdefault("train", {})
  if c["task"] == "flip_pretrain":
    old = c["pretrain"]
    for k in _TRAIN_FIELDS:
      if k in old:
        train[k] = old.pop(k)
    if "total_steps" in c:
      train["max_steps"] = c.pop("total_steps")
  elif c["task"] == "flip_finetune":
    old = c["finetune"]
    for k in _TRAIN_FIELDS:
      if k in old:
        train[k] = old.pop(k)
    loss = c.setdefault("loss", {})
    for old_key, new_key in (("loss_reduction", "reduction"),
                             ("aux_weight", "aux_weight"), ("l2", "l2"),
                             ("l2_regex", "l2_regex")):
      if old_key in old:
        loss[new_key] = old.pop(old_key)
  elif c["task"] == "ctr":
    if "epochs" in train:
      train["num_epochs"] = train.pop("epochs")
    if train.get("eval_every_steps") == 0:
      train["eval_every_steps"] = -1
    train.pop("shuffle", None)
    loss = c.setdefault("loss", {})
    optim = c.get("optim", {})
    for old_key, new_key in (("loss_reduction", "reduction"),
                             ("l2_preset", "l2_preset"),
                             ("l2_scale", "l2_scale")):
      if old_key in optim:
        loss[new_key] = optim.pop(old_key)
  for k, v in _TRAIN_DEFAULTS.items():
    train.setdefault(k, v)
  ckpt = c.setdefault("ckpt", {})
  for k, v in _CKPT_DEFAULTS.items():
    ckpt.setdefault(k, copy.deepcopy(v))
  if isinstance(c.get("data"), dict) and c["task"] != "ctr":
    c["data"].setdefault("pad_to", "max_length")  # before 'longest' existed
  c.setdefault("prng_impl", "threefry2x32")
  c.setdefault("log_every_steps", 50)
  plm = c.get("model", {}).get("plm")
  if isinstance(plm, dict):
    for k, v in _PLM_DEFAULTS.items():
      plm.setdefault(k, v)
  return c
