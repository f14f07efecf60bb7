"""FLIP's end-to-end workflow behind ``experiments.run_all`` (the default
method), written with the stage runner ``experiments.stages``.

Stages, each in its own sub-folder of a seed's folder, each resumable:
``prepare`` (data/), ``pretrain``, the finetuning stages of
``FINETUNE_STAGES`` (FLIP_ID / FLIP_PLM / FLIP and the baselines from the
public weights), ``fusion`` (the logistic-regression bound of
``experiments.fusion``), ``export`` (the joint model to PyTorch, parity
checked), and the opt-in ablations, PLM baselines and α variant. Then the
results table and the report (``experiments.report``).
"""
from __future__ import annotations

import os

from experiments import run_identity
from experiments import stages as stages_lib
from experiments.configs import flip_pretrain

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
# The presets the method has (run_all's --preset).
PRESETS = flip_pretrain.PRESETS
STAGES = DEFAULT_STAGES + tuple(f"ablate_{a}" for a in ABLATIONS) + (
    "base_joint",) + BASELINES + VARIANTS

# Finetuning stages: (mode, from the pretraining run?)
FINETUNE_STAGES = {
    "flip_id": ("id", True), "flip_plm": ("plm", True),
    "flip_joint": ("joint", True), "base_id": ("id", False),
    "base_plm": ("plm", False), "base_joint": ("joint", False),
}




def _base_arg(dataset, ctr, plm, preset):
  return f"dataset={dataset},ctr={ctr},plm={plm},preset={preset}"


def pretrain_config(dataset, data_dir, cache_dir, ctr, plm, preset, seed,
                    overrides):
  from experiments.configs import flip_pretrain  # pylint: disable=g-import-not-at-top
  return stages_lib.stage_config(
      flip_pretrain.get_config(_base_arg(dataset, ctr, plm, preset)),
      "pretrain", data_dir=data_dir, cache_dir=cache_dir, seed=seed,
      overrides=overrides)


def finetune_config(dataset, data_dir, cache_dir, ctr, plm, preset, seed, mode,
                    init_from, overrides, alpha="raw"):
  from experiments.configs import flip_finetune  # pylint: disable=g-import-not-at-top
  cfg = flip_finetune.get_config(_base_arg(dataset, ctr, plm, preset)
                                 + f",mode={mode},alpha={alpha}")
  cfg.ckpt.init_from = init_from
  return stages_lib.stage_config(cfg, "finetune", data_dir=data_dir,
                                 cache_dir=cache_dir, seed=seed,
                                 overrides=overrides)


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
  from experiments import report  # pylint: disable=g-import-not-at-top
  overrides = overrides or {}
  stages, seeds = stages_lib.run_args(stages, STAGES, DEFAULT_STAGES, seeds,
                                      seed)
  os.makedirs(workdir, exist_ok=True)
  stages_lib.check_overrides(overrides, [
      pretrain_config(dataset, data_dir, "", ctr, plm, preset, seeds[0], {}),
      finetune_config(dataset, data_dir, "", ctr, plm, preset, seeds[0],
                      "joint", "", {})])
  run_identity.claim(workdir, "flip", locals())  # before any stage writes
  data_overrides = {k: v for k, v in overrides.items()
                    if k.rpartition(":")[2].startswith("data.")}
  # One processed-data cache for every stage and seed of the run.
  cache_dir = os.path.join(workdir, ".flip_jax_cache")
  if "prepare" in stages:
    cfg = pretrain_config(dataset, data_dir, cache_dir, ctr, plm, preset,
                          seeds[0], data_overrides)
    stages_lib.prepare(workdir, cfg)
  for s, folder in stages_lib.seed_folders(workdir, seeds):
    _run_seed(folder, stages, s, dataset=dataset, data_dir=data_dir,
              cache_dir=cache_dir, preset=preset, plm=plm, ctr=ctr,
              overrides=overrides)
  return report.write_report(workdir, dataset=dataset, preset=preset)


def _run_seed(folder, stages, seed, *, dataset, data_dir, cache_dir, preset,
              plm, ctr, overrides) -> None:
  """The training and export stages of one seed in ``folder``."""
  os.makedirs(folder, exist_ok=True)
  log = stages_lib.StageLog(folder)
  run = (dataset, data_dir, cache_dir, ctr, plm, preset, seed)
  pre_dir = os.path.join(folder, "pretrain")
  if "pretrain" in stages:
    stages_lib.pretrain(log, "pretrain", pretrain_config(*run, overrides),
                        pre_dir)
  for name, (mode, from_pre) in FINETUNE_STAGES.items():
    if name in stages:
      stages_lib.train(log, name, finetune_config(
          *run, mode, pre_dir if from_pre else "", overrides),
                       os.path.join(folder, name))
  if "flip_joint_sigmoid" in stages:
    stages_lib.train(log, "flip_joint_sigmoid", finetune_config(
        *run, "joint", pre_dir, overrides, alpha="sigmoid"),
                     os.path.join(folder, "flip_joint_sigmoid"))
  if "fusion" in stages:
    from experiments import fusion  # pylint: disable=g-import-not-at-top
    for name in fusion.PAIRS:
      log.run(name, lambda n=name: os.path.exists(
          os.path.join(folder, n, stages_lib.RESULTS)),
              lambda n=name: fusion.run_stage(folder, n))
  for abl, loss in ABLATIONS.items():
    if f"ablate_{abl}" not in stages:
      continue
    abl_pre = os.path.join(folder, f"pretrain_{abl}")
    scoped = {**overrides, f"pretrain:pretrain.{loss}.enabled": "false"}
    stages_lib.pretrain(log, f"pretrain_{abl}",
                        pretrain_config(*run, scoped), abl_pre)
    stages_lib.train(log, f"flip_joint_{abl}", finetune_config(
        *run, "joint", abl_pre, overrides),
                     os.path.join(folder, f"flip_joint_{abl}"))
  if "ctr_bert" in stages:
    from experiments.configs import ctr_bert  # pylint: disable=g-import-not-at-top
    cfg = stages_lib.stage_config(
        ctr_bert.get_config(_base_arg(dataset, ctr, plm, preset)),
        "finetune", data_dir=data_dir, cache_dir=cache_dir, seed=seed,
        overrides=overrides)
    stages_lib.train(log, "ctr_bert", cfg, os.path.join(folder, "ctr_bert"))
  if "p_tab" in stages:
    from experiments.configs import p_tab_pretrain  # pylint: disable=g-import-not-at-top
    pcfg = stages_lib.stage_config(
        p_tab_pretrain.get_config(_base_arg(dataset, ctr, plm, preset)),
        "pretrain", data_dir=data_dir, cache_dir=cache_dir, seed=seed,
        overrides=overrides)
    p_dir = os.path.join(folder, "p_tab_pretrain")
    stages_lib.pretrain(log, "p_tab_pretrain", pcfg, p_dir)
    stages_lib.train(log, "p_tab", finetune_config(
        *run, "plm", p_dir, overrides), os.path.join(folder, "p_tab"))
  if "export" in stages:
    stages_lib.export(log, "export", os.path.join(folder, "flip_joint"),
                      os.path.join(folder, "export_joint"))
