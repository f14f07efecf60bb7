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
                   "patience": 3, "patience_unit": "evals"}
_CKPT_DEFAULTS = {"every_steps": -1, "keep": 2, "async_save": False,
                  "init_from": "", "init_step": -1, "keep_regex": [],
                  "drop_regex": [], "allow_missing_regex": []}
_PLM_DEFAULTS = {"remat": False, "attention": "xla",
                 "attention_dropout": None, "dropout": None,
                 "num_layers": None, "dropout_bits": 32, "fused_qkv": False}
# Keys older layouts had -> today's (dotted), per task: `upgrade` moves
# them, and the launchers name the new key when a flag or override uses an
# old one (`renamed_to`).
_MOVED = {
    "flip_pretrain": {**{f"pretrain.{k}": f"train.{k}" for k in _TRAIN_FIELDS},
                      "total_steps": "train.max_steps"},
    "flip_finetune": {**{f"finetune.{k}": f"train.{k}" for k in _TRAIN_FIELDS},
                      "finetune.loss_reduction": "loss.reduction",
                      "finetune.aux_weight": "loss.aux_weight",
                      "finetune.l2": "loss.l2",
                      "finetune.l2_regex": "loss.l2_regex"},
    "ctr": {"train.epochs": "train.num_epochs",
            "optim.loss_reduction": "loss.reduction",
            "optim.l2_preset": "loss.l2_preset",
            "optim.l2_scale": "loss.l2_scale"},
}
# Every old key -> its new key (the tasks' tables merged).
RENAMED = {old: new for moves in _MOVED.values() for old, new in moves.items()}
# Old keys dropped without a successor -> why.
REMOVED = {"train.shuffle": "the loop always shuffles the training rows"}


def renamed_to(key: str) -> str | None:
  """Today's name of an old dotted key (``total_steps`` -> ``train.max_steps``),
  else None."""
  return RENAMED.get(key)


_MISSING = object()


def _pop(c: dict[str, Any], key: str):
  """Removes dotted ``key`` from ``c``; its value, else _MISSING."""
  *parents, leaf = key.split(".")
  for p in parents:
    c = c.get(p) if isinstance(c, dict) else None
  if not isinstance(c, dict) or leaf not in c:
    return _MISSING
  return c.pop(leaf)


def _move(c: dict[str, Any], moves: dict[str, str]) -> None:
  """Moves each old dotted key present in ``c`` to its new key."""
  for old, new in moves.items():
    value = _pop(c, old)
    if value is _MISSING:
      continue
    *parents, leaf = new.split(".")
    node = c
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value


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
    # before the held-out ICL monitor
    c["pretrain"].setdefault("heldout_rows", 0)
  elif c["task"] in ("flip_finetune", "ctr"):
    c.setdefault("loss", {})
  _move(c, _MOVED.get(c["task"], {}))
  if c["task"] == "ctr":
    if train.get("eval_every_steps") == 0:
      train["eval_every_steps"] = -1
    for key in REMOVED:
      _pop(c, key)
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
