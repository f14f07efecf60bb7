"""The stage helpers the runner ``experiments.workflow`` is built on.

Each stage lives in its own sub-folder of a seed's folder and is resumable:
the runner skips a stage whose done-file exists, an interrupted training
stage resumes from its checkpoint, and ``StageLog`` records wall time and
device in ``stages.json``. Here: the done-file names, the run functions of
the ``pretrain`` / ``train`` / ``export`` kinds and ``prepare_data``,
``run_args`` (the stage and seed checks), ``seed_folders`` (each seed's
folder; the workdir itself for one seed), ``write_report_files`` and
``write_comparison``.

Overrides (run_all's ``--set``): ``key=value`` for every stage whose config
has the key's section, ``pretrain:key`` / ``finetune:key`` for one phase.
"""
from __future__ import annotations

import copy
import html
import os
import time
from typing import Any, Callable

import jax
from absl import logging
from ml_collections.config_flags import config_flags

from experiments import config_errors
from experiments import report_io
from flip_jax import jsonio

PHASES = ("pretrain", "finetune")
PRETRAIN_DONE = "pretrain_done.json"
RESULTS = "results.json"
CHECK = "check.json"


def apply_overrides(config, overrides: dict[str, str]):
  """Dotted ``key=value`` overrides on a ConfigDict.

  The same syntax and typing as ml_collections' ``--config.<key>=<value>``
  flags: the value is parsed by its literal parser (``true``/``false``,
  numbers, lists, tuples, ``None``; anything else a string) and assigned
  type-safely (an int field refuses a string, ...). An unknown key (or one
  renamed by a redesign) or a value of the wrong type is a
  ``config_errors.ConfigKeyError`` naming the key (and its new name, or
  ml_collections' suggestion) or the type the field takes.
  """
  parser = config_flags._LiteralParser()  # pylint: disable=protected-access
  for key, text in overrides.items():
    why = config_errors.unknown_key(config, key)
    if why is not None:
      raise config_errors.ConfigKeyError(f"override {key}={text}: {why}")
    try:
      set_field(config, key, parser.parse(text))
    except TypeError as e:
      want = config_errors.field_type(config, key)
      raise config_errors.ConfigKeyError(
          config_errors.type_message(f"override {key}", text, want)
          if want is not None else f"override {key}={text}: {e}") from e
  return config


def set_field(config, key: str, value) -> None:
  """Sets the dotted field ``key`` ('ckpt.init_from') of ``config``."""
  *parents, leaf = key.split(".")
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = value


class StageLog:
  """stages.json: wall time, device and status of each stage."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, "stages.json")
    self.data = {}
    if os.path.exists(self.path):
      self.data = jsonio.read_json(self.path, expect=dict)

  def run(self, name: str, done: Callable[[], bool], fn: Callable[[], Any]):
    if done():
      logging.info("stage %s: already done, skipped", name)
      return None
    logging.info("stage %s: running", name)
    t0 = time.time()
    out = fn()
    # Re-read before writing: stages of one workdir may run in separate
    # processes at once (one GPU shared by several stages).
    if os.path.exists(self.path):
      self.data = jsonio.read_json(self.path, expect=dict)
    prev = self.data.get(name, {}).get("wall_sec", 0.0)
    self.data[name] = {"wall_sec": prev + time.time() - t0,
                       "device": f"{jax.devices()[0].device_kind} "
                                 f"x{jax.device_count()}",
                       "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    jsonio.write_json_atomic(self.path, self.data)
    return out


def stage_overrides(cfg, overrides: dict[str, str], phase: str
                    ) -> dict[str, str]:
  """The overrides of one phase ('pretrain' or 'finetune').

  ``<phase>:key`` applies to that phase only; a plain ``key`` to every
  phase whose config has its top-level section (``train.*`` to both,
  ``pretrain.*`` to pretraining, ``loss.*`` / ``finetune.*`` to finetuning).
  """
  out = {}
  for key, value in overrides.items():
    scope, _, bare = key.rpartition(":")
    if scope and scope not in PHASES:
      raise KeyError(f"override {key!r}: scope {scope!r} is not one of "
                     f"{PHASES}")
    if scope == phase or (not scope and bare.split(".")[0] in cfg):
      out[bare] = value
  return out


def check_overrides(overrides: dict[str, str], configs) -> None:
  """Refuses, before any stage runs, an override that no phase takes.

  Each override must apply to some phase (`stage_overrides`) and, in every
  phase it applies to, name a field with a value of its type
  (`apply_overrides` on a copy).

  Args:
    overrides: key -> value text (run_all's --set).
    configs: the phases' configs, in ``PHASES`` order.
  """
  for key, value in overrides.items():
    applied = 0
    for cfg, phase in zip(configs, PHASES):
      mine = stage_overrides(cfg, {key: value}, phase)
      if mine:
        try:
          apply_overrides(copy.deepcopy(cfg), mine)
        except config_errors.ConfigKeyError as e:
          raise config_errors.ConfigKeyError(
              f"{e} (in the {phase} stages' config)") from e
        applied += 1
    if not applied:
      bare = key.rpartition(":")[2]
      why = config_errors.unknown_key(configs[0], bare) or (
          f"no stage's config has a section {bare.split('.')[0]!r}")
      raise config_errors.ConfigKeyError(f"override {key}={value}: {why}")


def run_args(stages, known, default, seeds, seed):
  """(stages, seeds) of a method's run_all, checked: every stage known,
  each seed once; the defaults where none are given."""
  stages = list(stages or default)
  unknown = [s for s in stages if s not in known]
  if unknown:
    raise ValueError(f"unknown stages {unknown}; known: {list(known)}")
  seeds = list(seeds or [seed])
  if len(set(seeds)) != len(seeds):
    raise ValueError(f"seeds {seeds}: each seed once")
  return stages, seeds


def stage_config(cfg, phase: str, *, data_dir: str, cache_dir: str,
                 seed: int, overrides: dict[str, str]):
  """A stage's config: the run-wide fields (raw data, the run's processed
  data cache, the seed) set, then the overrides of its ``phase``."""
  cfg.data.data_dir = data_dir
  cfg.data.cache_dir = cache_dir
  cfg.seed = seed
  return apply_overrides(cfg, stage_overrides(cfg, overrides, phase))


def seed_folders(workdir: str, seeds) -> list[tuple[int, str]]:
  """(seed, folder) of each seed: ``seed<N>/`` with several, else the
  workdir itself."""
  return [(s, workdir if len(seeds) == 1 else os.path.join(workdir,
                                                           f"seed{s}"))
          for s in seeds]


def run_pretrain(cfg, run_dir: str) -> None:
  """A pretraining run; then ``pretrain_done.json`` (its done-file) with
  its last logged metrics."""
  from experiments import launch  # pylint: disable=g-import-not-at-top
  last = launch.run(cfg, run_dir)
  if jax.process_index() == 0:
    jsonio.write_json_atomic(os.path.join(run_dir, PRETRAIN_DONE), last)


def run_train(cfg, run_dir: str):
  """An evaluated training run (the loop writes ``results.json``)."""
  from experiments import launch  # pylint: disable=g-import-not-at-top
  return launch.run(cfg, run_dir)


def run_export(run_dir: str, out: str) -> float:
  """Exports a finished run to PyTorch with the parity check; then
  ``<out>/check.json`` with the largest difference and the tolerance."""
  from flip_jax.methods import run_export as export_lib  # pylint: disable=g-import-not-at-top
  diff = export_lib.export_run(run_dir, out, check=True)
  jsonio.write_json_atomic(os.path.join(out, CHECK),
                           {"max_abs_diff": float(diff),
                            "atol": export_lib.CHECK_ATOL})
  return diff


def prepare_data(cfg, workdir: str) -> dict:
  """The data of ``cfg`` prepared once, its feature map and statistics in
  ``<workdir>/data`` (the same as ``experiments.prepare_data``)."""
  from flip_jax.data import prepare  # pylint: disable=g-import-not-at-top
  prepared = prepare.load_dataset(cfg.data,
                                  prepare.default_cache_root(cfg.data, workdir))
  out = os.path.join(workdir, "data")
  os.makedirs(out, exist_ok=True)
  if jax.process_index() == 0:
    prepared.feature_map.save(os.path.join(out, "feature_map.json"))
    jsonio.write_json_atomic(os.path.join(out, "stats.json"), prepared.stats)
  return prepared.stats


def write_report_files(workdir: str, *, table: str, text: str,
                       plots: list[tuple[str, str]], summary: dict) -> None:
  """``summary.json``, ``results.md`` (the table), ``report.md`` (the text)
  and ``report.html`` (the text and the plots)."""
  jsonio.write_json_atomic(os.path.join(workdir, "summary.json"), summary)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(table + "\n")
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write(text)
  body = "".join(f"<h2>{html.escape(t)}</h2><img src='{f}'>"
                 for t, f in plots)
  with open(os.path.join(workdir, "report.html"), "w") as f:
    f.write(f"<html><body><pre>{html.escape(text)}</pre>{body}</body></html>")


def write_comparison(workdir: str, methods) -> str:
  """``comparison.md``: every model of every method's ``summary.json`` on
  the same split, one table (test AUC / gAUC / LogLoss)."""
  lines = ["| method | model | seeds | test AUC | test gAUC | test LogLoss |",
           "|---|---|---|---|---|---|"]
  for m in methods:
    summ = report_io.read_json(os.path.join(workdir, m, "summary.json")) or {}
    for name, e in summ.get("models", {}).items():
      per = e.get("per_seed", {})
      cells = []
      for k in ("test/auc", "test/gauc", "test/logloss"):
        if k in per and len(per[k]["values"]) > 1:  # mean ± std over seeds
          cells.append(f"{per[k]['mean']:.4f} ± {per[k]['std']:.4f}")
        else:
          cells.append(f"{e[k]:.4f}" if isinstance(e.get(k), float) else "")
      n = len(per["test/auc"]["values"]) if "test/auc" in per else 1
      lines.append(f"| {m} | {name} | {n} | " + " | ".join(cells) + " |")
  table = "\n".join(lines)
  with open(os.path.join(workdir, "comparison.md"), "w") as f:
    f.write("# Methods side by side\n\nSame dataset and split protocol; "
            "each method's preset sets its data sizes (e.g. FLIP's CPU "
            "presets subsample, SRP4CTR's keep whole histories), so compare "
            "rows across methods only where their presets' data agree.\n\n"
            + table + "\n")
  return table
