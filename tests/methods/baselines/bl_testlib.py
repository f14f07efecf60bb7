"""Shared helpers of the baseline tests: tiny configs and a loop runner."""
import json
import os

from experiments.configs import ctr_bert as ctr_bert_config
from experiments.configs import flip_finetune
from experiments.configs import p_tab_pretrain
from flip_jax import checkpoint
from flip_jax import methods
from flip_jax.train import loop


def tiny_fields(plm_dir, cache_dir) -> dict:
  """Tiny data, a one-layer random BERT, two steps."""
  return {
      "data.cache_dir": str(cache_dir), "data.max_length": 48,
      "data.synthetic.num_users": 60, "data.synthetic.num_movies": 50,
      "data.synthetic.num_ratings": 1500,
      "model.plm.name": str(plm_dir), "model.plm.num_layers": 1,
      "train.batch_size": 16, "train.eval_batch_size": 64,
      "train.micro_batch_size": 0, "train.max_steps": 2,
      "train.eval_every_steps": 2, "log_every_steps": 1,
      "ckpt.async_save": False,
  }


def set_fields(cfg, values):
  """Sets dotted fields ('train.max_steps') in place; returns cfg."""
  for key, value in values.items():
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise KeyError(f"config has no field {key!r}")
    node[leaf] = value
  return cfg


def ctr_bert_cfg(plm_dir, cache_dir, **extra):
  cfg = ctr_bert_config.get_config("dataset=synthetic,preset=tiny")
  return set_fields(cfg, {**tiny_fields(plm_dir, cache_dir), **extra})


def p_tab_cfg(plm_dir, cache_dir, **extra):
  cfg = p_tab_pretrain.get_config("dataset=synthetic,preset=tiny")
  return set_fields(cfg, {**tiny_fields(plm_dir, cache_dir), **extra})


def finetune_plm_cfg(plm_dir, cache_dir, init_from, **extra):
  """FLIP's PLM-only finetuning (P-Tab's stage 2) from ``init_from``."""
  cfg = flip_finetune.get_config("dataset=synthetic,preset=tiny,mode=plm")
  cfg = set_fields(cfg, {**tiny_fields(plm_dir, cache_dir), **extra})
  cfg.ckpt.init_from = str(init_from)
  return cfg


def train(cfg, workdir):
  return loop.train_and_evaluate(cfg, str(workdir), methods.make_task(cfg))


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def final_params(workdir):
  with checkpoint.Checkpointer(str(workdir), max_to_keep=None,
                               save_interval_steps=1) as c:
    step = c.latest_step()
  return step, checkpoint.restore_params(str(workdir), step=step)
