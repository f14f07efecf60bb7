"""End-to-end FLIP workflow behind ``experiments.run_all``.

Runs the stages in order inside one process, each in its own sub-workdir,
each resumable (a stage whose outputs exist is skipped; an interrupted
training stage resumes from its checkpoint), records the wall time and
device of every stage in ``stages.json``, and writes the results table and
the report.
"""
from __future__ import annotations

import copy
import os
import time
from typing import Any, Callable

import jax
from absl import logging
from ml_collections.config_flags import config_flags

from experiments import config_errors
from experiments import run_identity
from flip_jax import jsonio

PHASES = ("pretrain", "finetune")
# The default run: the paper's headline table.
DEFAULT_STAGES = ("prepare", "pretrain", "flip_id", "flip_plm", "flip_joint",
                  "base_id", "base_plm", "fusion", "export")
# Ablations (opt-in with --stages): each pretrains without one loss, then
# finetunes the joint model from it; base_joint is the joint model from
# the public weights (no pretraining).
ABLATIONS = {"no_mlm": "mlm", "no_mtm": "mtm", "no_icl": "icl"}
# The paper's PLM baselines (opt-in): CTR-BERT (two towers) and P-Tab
# (token MLM on the prompts, then [CLS] finetuning).
BASELINES = ("ctr_bert", "p_tab")
# Opt-in variant: the joint model with alpha = sigmoid(θ) at its own rate.
VARIANTS = ("flip_joint_sigmoid",)
STAGES = DEFAULT_STAGES + tuple(f"ablate_{a}" for a in ABLATIONS) + (
    "base_joint",) + BASELINES + VARIANTS

# Finetuning stages: (mode, from the pretraining run?)
FINETUNE_STAGES = {
    "flip_id": ("id", True), "flip_plm": ("plm", True),
    "flip_joint": ("joint", True), "base_id": ("id", False),
    "base_plm": ("plm", False), "base_joint": ("joint", False),
}


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
    node = config
    parts = key.split(".")
    for p in parts[:-1]:
      node = node[p]
    try:
      node[parts[-1]] = parser.parse(text)
    except TypeError as e:
      want = config_errors.field_type(config, key)
      raise config_errors.ConfigKeyError(
          config_errors.type_message(f"override {key}", text, want)
          if want is not None else f"override {key}={text}: {e}") from e
  return config


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


def _base_arg(dataset, ctr, plm, preset):
  return f"dataset={dataset},ctr={ctr},plm={plm},preset={preset}"


def pretrain_config(dataset, data_dir, cache_dir, ctr, plm, preset, seed,
                    overrides):
  from experiments.configs import flip_pretrain  # pylint: disable=g-import-not-at-top
  cfg = _with_run(flip_pretrain.get_config(_base_arg(dataset, ctr, plm,
                                                    preset)),
                  data_dir, cache_dir, seed)
  return apply_overrides(cfg, stage_overrides(cfg, overrides, "pretrain"))


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


def _with_run(cfg, data_dir, cache_dir, seed):
  """The run-wide fields every stage's config shares."""
  cfg.data.data_dir = data_dir
  cfg.data.cache_dir = cache_dir
  cfg.seed = seed
  return cfg


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


def finetune_config(dataset, data_dir, cache_dir, ctr, plm, preset, seed, mode,
                    init_from, overrides, alpha="raw"):
  from experiments.configs import flip_finetune  # pylint: disable=g-import-not-at-top
  cfg = flip_finetune.get_config(_base_arg(dataset, ctr, plm, preset)
                                 + f",mode={mode},alpha={alpha}")
  cfg = _with_run(cfg, data_dir, cache_dir, seed)
  cfg.ckpt.init_from = init_from
  return apply_overrides(cfg, stage_overrides(cfg, overrides, "finetune"))


def run_all(*, dataset: str, data_dir: str, workdir: str, preset: str,
            plm: str, ctr: str, seed: int, stages=None,
            overrides: dict[str, str] | None = None,
            seeds: list[int] | None = None) -> str:
  """Runs the selected stages and returns the printed results table.

  With several ``seeds`` every model is trained once per seed, each seed's
  stages in ``<workdir>/seed<N>/`` (data prepared once); the report shows
  mean ± std and decides each claim on the per-seed paired differences.
  One seed keeps the stages directly in the workdir.
  """
  # pylint: disable=g-import-not-at-top
  from experiments import report
  # pylint: enable=g-import-not-at-top
  overrides = overrides or {}
  stages, seeds = run_args(stages, STAGES, DEFAULT_STAGES, seeds, seed)
  os.makedirs(workdir, exist_ok=True)
  check_overrides(overrides, [
      pretrain_config(dataset, data_dir, "", ctr, plm, preset, seeds[0], {}),
      finetune_config(dataset, data_dir, "", ctr, plm, preset, seeds[0],
                      "joint", "", {})])
  run_identity.claim(workdir, "flip", locals())  # before any stage writes
  data_overrides = {k: v for k, v in overrides.items()
                    if k.rpartition(":")[2].startswith("data.")}
  # One processed-data cache for every stage and seed of the run.
  cache_dir = os.path.join(workdir, ".flip_jax_cache")
  if "prepare" in stages:
    StageLog(workdir).run(
        "prepare", lambda: os.path.exists(
            os.path.join(workdir, "data", "stats.json")),
        lambda: _prepare(dataset, data_dir, cache_dir, workdir, preset,
                         plm, ctr, seeds[0], data_overrides))
  for s in seeds:
    folder = workdir if len(seeds) == 1 else os.path.join(workdir, f"seed{s}")
    _run_seed(folder, stages, s, dataset=dataset, data_dir=data_dir,
              cache_dir=cache_dir, preset=preset, plm=plm, ctr=ctr,
              overrides=overrides)
  return report.write_report(workdir, dataset=dataset, preset=preset)


def _run_seed(folder, stages, seed, *, dataset, data_dir, cache_dir, preset,
              plm, ctr, overrides) -> None:
  """The training and export stages of one seed in ``folder``."""
  # pylint: disable=g-import-not-at-top
  from experiments import launch
  # pylint: enable=g-import-not-at-top
  os.makedirs(folder, exist_ok=True)
  log = StageLog(folder)
  pre_dir = os.path.join(folder, "pretrain")
  if "pretrain" in stages:
    cfg = pretrain_config(dataset, data_dir, cache_dir, ctr, plm, preset,
                          seed, overrides)
    done_file = os.path.join(pre_dir, "pretrain_done.json")

    def _pretrain():
      last = launch.run(cfg, pre_dir)
      if jax.process_index() == 0:
        jsonio.write_json_atomic(done_file, last)
    log.run("pretrain", lambda: os.path.exists(done_file), _pretrain)

  for name, (mode, from_pre) in FINETUNE_STAGES.items():
    if name not in stages:
      continue
    ft_dir = os.path.join(folder, name)
    cfg = finetune_config(dataset, data_dir, cache_dir, ctr, plm, preset,
                          seed, mode, pre_dir if from_pre else "", overrides)
    log.run(name, lambda d=ft_dir: os.path.exists(
        os.path.join(d, "results.json")),
            lambda c=cfg, d=ft_dir: launch.run(c, d))

  if "flip_joint_sigmoid" in stages:
    d = os.path.join(folder, "flip_joint_sigmoid")
    cfg = finetune_config(dataset, data_dir, cache_dir, ctr, plm, preset,
                          seed, "joint", pre_dir, overrides, alpha="sigmoid")
    log.run("flip_joint_sigmoid", lambda: os.path.exists(
        os.path.join(d, "results.json")), lambda: launch.run(cfg, d))

  if "fusion" in stages:
    from experiments import fusion  # pylint: disable=g-import-not-at-top
    for name in fusion.PAIRS:
      log.run(name, lambda n=name: os.path.exists(
          os.path.join(folder, n, "results.json")),
              lambda n=name: fusion.run_stage(folder, n))

  for abl, loss in ABLATIONS.items():
    if f"ablate_{abl}" not in stages:
      continue
    abl_pre = os.path.join(folder, f"pretrain_{abl}")
    scoped = {**overrides, f"pretrain:pretrain.{loss}.enabled": "false"}
    pcfg = pretrain_config(dataset, data_dir, cache_dir, ctr, plm, preset,
                           seed, scoped)
    done = os.path.join(abl_pre, "pretrain_done.json")

    def _abl_pretrain(c=pcfg, d=abl_pre, f=done):
      last = launch.run(c, d)
      if jax.process_index() == 0:
        jsonio.write_json_atomic(f, last)
    log.run(f"pretrain_{abl}", lambda f=done: os.path.exists(f),
            _abl_pretrain)
    ft_dir = os.path.join(folder, f"flip_joint_{abl}")
    fcfg = finetune_config(dataset, data_dir, cache_dir, ctr, plm, preset,
                           seed, "joint", abl_pre, overrides)
    log.run(f"flip_joint_{abl}", lambda d=ft_dir: os.path.exists(
        os.path.join(d, "results.json")),
            lambda c=fcfg, d=ft_dir: launch.run(c, d))

  if "ctr_bert" in stages:
    from experiments.configs import ctr_bert  # pylint: disable=g-import-not-at-top
    cfg = _with_run(ctr_bert.get_config(_base_arg(dataset, ctr, plm, preset)),
                    data_dir, cache_dir, seed)
    cfg = apply_overrides(cfg, stage_overrides(cfg, overrides, "finetune"))
    d = os.path.join(folder, "ctr_bert")
    log.run("ctr_bert", lambda: os.path.exists(
        os.path.join(d, "results.json")), lambda: launch.run(cfg, d))

  if "p_tab" in stages:
    from experiments.configs import p_tab_pretrain  # pylint: disable=g-import-not-at-top
    pcfg = _with_run(p_tab_pretrain.get_config(
        _base_arg(dataset, ctr, plm, preset)), data_dir, cache_dir, seed)
    pcfg = apply_overrides(pcfg, stage_overrides(pcfg, overrides, "pretrain"))
    p_dir = os.path.join(folder, "p_tab_pretrain")
    p_done = os.path.join(p_dir, "pretrain_done.json")

    def _p_tab_pretrain():
      last = launch.run(pcfg, p_dir)
      if jax.process_index() == 0:
        jsonio.write_json_atomic(p_done, last)
    log.run("p_tab_pretrain", lambda: os.path.exists(p_done), _p_tab_pretrain)
    fcfg = finetune_config(dataset, data_dir, cache_dir, ctr, plm, preset,
                           seed, "plm", p_dir, overrides)
    d = os.path.join(folder, "p_tab")
    log.run("p_tab", lambda: os.path.exists(os.path.join(d, "results.json")),
            lambda: launch.run(fcfg, d))

  if "export" in stages:
    out = os.path.join(folder, "export_joint")

    def _export():
      from flip_jax.export import run_export  # pylint: disable=g-import-not-at-top
      diff = run_export.export_run(os.path.join(folder, "flip_joint"), out,
                                   check=True)
      jsonio.write_json_atomic(os.path.join(out, "check.json"),
                               {"max_abs_diff": float(diff)})
    log.run("export", lambda: os.path.exists(os.path.join(out, "check.json")),
            _export)


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
