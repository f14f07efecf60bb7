"""End-to-end FLIP workflow behind ``experiments.run_all``.

Runs the stages in order inside one process, each in its own sub-workdir,
each resumable (a stage whose outputs exist is skipped; an interrupted
training stage resumes from its checkpoint), records the wall time and
device of every stage in ``stages.json``, and writes the results table and
the report.
"""
from __future__ import annotations

import ast
import json
import os
import time
from typing import Any, Callable

import jax
from absl import logging

from flip_jax import jsonio

STAGES = ("prepare", "pretrain", "flip_id", "flip_plm", "flip_joint",
          "base_id", "base_plm", "export")

# Finetuning stages: (mode, from the pretraining run?)
FINETUNE_STAGES = {
    "flip_id": ("id", True), "flip_plm": ("plm", True),
    "flip_joint": ("joint", True), "base_id": ("id", False),
    "base_plm": ("plm", False),
}


def _parse_value(text: str, current: Any) -> Any:
  if isinstance(current, bool):
    return text.lower() in ("1", "true", "yes")
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def apply_overrides(config, overrides: dict[str, str]):
  """Dotted key=value overrides on a ConfigDict, typed by the current value."""
  for key, text in overrides.items():
    node = config
    parts = key.split(".")
    for p in parts[:-1]:
      if p not in node:
        raise KeyError(f"override {key!r}: no field {p!r}")
      node = node[p]
    if parts[-1] not in node:
      raise KeyError(f"override {key!r}: no field {parts[-1]!r}")
    node[parts[-1]] = _parse_value(text, node[parts[-1]])
  return config


class StageLog:
  """stages.json: wall time, device and status of each stage."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, "stages.json")
    self.data = {}
    if os.path.exists(self.path):
      with open(self.path) as f:
        self.data = json.load(f)

  def run(self, name: str, done: Callable[[], bool], fn: Callable[[], Any]):
    if done():
      logging.info("stage %s: already done, skipped", name)
      return None
    logging.info("stage %s: running", name)
    t0 = time.time()
    out = fn()
    prev = self.data.get(name, {}).get("wall_sec", 0.0)
    self.data[name] = {"wall_sec": prev + time.time() - t0,
                       "device": f"{jax.devices()[0].device_kind} "
                                 f"x{jax.device_count()}",
                       "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    jsonio.write_json_atomic(self.path, self.data)
    return out


def _base_arg(dataset, ctr, plm, preset):
  return f"dataset={dataset},ctr={ctr},plm={plm},preset={preset}"


def pretrain_config(dataset, data_dir, cache_dir, ctr, plm, preset, seed,
                    overrides):
  from experiments.configs import flip_pretrain  # pylint: disable=g-import-not-at-top
  cfg = flip_pretrain.get_config(_base_arg(dataset, ctr, plm, preset))
  cfg.data.data_dir = data_dir
  cfg.data.cache_dir = cache_dir
  cfg.seed = seed
  return apply_overrides(cfg, overrides)


def finetune_config(dataset, data_dir, cache_dir, ctr, plm, preset, seed, mode,
                    init_from, overrides):
  from experiments.configs import flip_finetune  # pylint: disable=g-import-not-at-top
  cfg = flip_finetune.get_config(_base_arg(dataset, ctr, plm, preset)
                                 + f",mode={mode}")
  cfg.data.data_dir = data_dir
  cfg.data.cache_dir = cache_dir
  cfg.seed = seed
  cfg.ckpt.init_from = init_from
  return apply_overrides(cfg, overrides)


def run_all(*, dataset: str, data_dir: str, workdir: str, preset: str,
            plm: str, ctr: str, seed: int, stages=None,
            overrides: dict[str, str] | None = None) -> str:
  """Runs the selected stages and returns the printed results table."""
  # pylint: disable=g-import-not-at-top
  from experiments import report
  from experiments import train
  # pylint: enable=g-import-not-at-top
  overrides = overrides or {}
  stages = list(stages or STAGES)
  unknown = [s for s in stages if s not in STAGES]
  if unknown:
    raise ValueError(f"unknown stages {unknown}; known: {list(STAGES)}")
  os.makedirs(workdir, exist_ok=True)
  log = StageLog(workdir)
  data_overrides = {k: v for k, v in overrides.items() if k.startswith("data.")}
  pre_dir = os.path.join(workdir, "pretrain")
  # One processed-data cache for every stage of the run.
  cache_dir = os.path.join(workdir, ".flip_jax_cache")

  if "prepare" in stages:
    log.run("prepare", lambda: os.path.exists(
        os.path.join(workdir, "data", "stats.json")),
            lambda: _prepare(dataset, data_dir, cache_dir, workdir, preset,
                             plm, ctr, seed, data_overrides))

  if "pretrain" in stages:
    cfg = pretrain_config(dataset, data_dir, cache_dir, ctr, plm, preset,
                          seed, overrides)
    done_file = os.path.join(pre_dir, "pretrain_done.json")

    def _pretrain():
      last = train.run(cfg, pre_dir)
      if jax.process_index() == 0:
        jsonio.write_json_atomic(done_file, last)
    log.run("pretrain", lambda: os.path.exists(done_file), _pretrain)

  for name, (mode, from_pre) in FINETUNE_STAGES.items():
    if name not in stages:
      continue
    ft_dir = os.path.join(workdir, name)
    cfg = finetune_config(dataset, data_dir, cache_dir, ctr, plm, preset,
                          seed, mode, pre_dir if from_pre else "",
                          {k: v for k, v in overrides.items()
                           if not k.startswith("pretrain.")})
    log.run(name, lambda d=ft_dir: os.path.exists(
        os.path.join(d, "results.json")),
            lambda c=cfg, d=ft_dir: train.run(c, d))

  if "export" in stages:
    out = os.path.join(workdir, "export_joint")

    def _export():
      from flip_jax.methods.flip import export as finetuned  # pylint: disable=g-import-not-at-top
      diff = finetuned.export_finetuned(os.path.join(workdir, "flip_joint"),
                                        out, check=True)
      jsonio.write_json_atomic(os.path.join(out, "check.json"),
                                   {"max_abs_diff": float(diff)})
    log.run("export", lambda: os.path.exists(os.path.join(out, "check.json")),
            _export)

  return report.write_report(workdir, dataset=dataset, preset=preset)


def _prepare(dataset, data_dir, cache_dir, workdir, preset, plm, ctr, seed,
             overrides):
  """Data preparation + stats (the same as experiments.prepare_data)."""
  # pylint: disable=g-import-not-at-top
  from flip_jax.data import prepare
  # pylint: enable=g-import-not-at-top
  cfg = pretrain_config(dataset, data_dir, cache_dir, ctr, plm, preset, seed,
                        overrides)
  out = os.path.join(workdir, "data")
  os.makedirs(out, exist_ok=True)
  prepared = prepare.load_dataset(cfg.data,
                                  prepare.default_cache_root(cfg.data, workdir))
  if jax.process_index() == 0:
    prepared.feature_map.save(os.path.join(out, "feature_map.json"))
    jsonio.write_json_atomic(os.path.join(out, "stats.json"),
                                 prepared.stats)
  return prepared.stats
