"""Reading a run workdir's files: JSON, JSON lines, the seed folders and a
run's global batch.

Shared by the report modules (``report``, ``report_plots``,
``pretrain_check``) and the methods' workflows.
"""
from __future__ import annotations

import json
import os
import re

from flip_jax.train import config_compat


def read_json(path):
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def read_jsonl(path):
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def seed_dirs(workdir: str) -> list[tuple[int | None, str]]:
  """(seed, folder) of each seed's stages: ``seed<N>/`` folders of a
  multi-seed run, else the workdir itself (seed None)."""
  subs = sorted((int(d[4:]), os.path.join(workdir, d))
                for d in (os.listdir(workdir) if os.path.isdir(workdir)
                          else []) if re.fullmatch(r"seed\d+", d))
  return subs or [(None, workdir)]


def batch_size(run_dir: str) -> int | None:
  """The global batch of a training run (its ``config.json``, upgraded);
  None when it has none."""
  cfg = read_json(os.path.join(run_dir, "config.json"))
  return int(config_compat.upgrade(cfg)["train"]["batch_size"]) if cfg else None
