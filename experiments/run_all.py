r"""The main job: raw data -> FLIP pretraining -> finetuning -> results table.

  # embedded synthetic default (the README's `make demo`):
  python -m experiments.run_all --dataset=synthetic --workdir=runs/demo

  # real data:
  python -m experiments.run_all --dataset=ml-1m --data_dir=../shared/data/ml-1m \
    --workdir=runs/ml1m --preset=cpu-small

Stages (each resumable; a finished stage is skipped on rerun):
  prepare   data preparation and statistics            <workdir>/data
  pretrain  FLIP pretraining (MLM + MTM + ICL)          <workdir>/pretrain
  flip_id / flip_plm / flip_joint   finetuning from the pretraining run
  base_id   the ID model (DCNv2) from scratch
  base_plm  the PLM-only CTR model from the public weights
  export    the joint model to PyTorch, with a parity check
Then <workdir>/results.md / report.md (+ PNG plots) are written.
"""
from __future__ import annotations

import os

from absl import app
from absl import flags

from experiments import launch
from flip_jax import compile_cache

# Method -> the module holding its SPEC (the contract of
# ``experiments.workflow``).
METHODS = {"flip": "experiments.flip_workflow",
           "clickprompt": "experiments.clickprompt_workflow",
           "srp4ctr": "experiments.srp4ctr_workflow"}

_METHOD = launch.flag(flags.DEFINE_list, "method", ["flip"],
                      f"Method(s): {', '.join(METHODS)}; several run one "
                      "after the other in <workdir>/<method>/ and add a "
                      "comparison table (comparison.md).")
_DATASET = launch.flag(flags.DEFINE_string, "dataset", "synthetic",
                       "Dataset name.")
_DATA_DIR = launch.flag(flags.DEFINE_string, "data_dir", "",
                        "Raw data folder (not for synthetic).")
_WORKDIR = launch.flag(flags.DEFINE_string, "workdir", None, "Run directory.",
                       required=True)
_PRESET = launch.flag(flags.DEFINE_enum, "preset", "cpu-small",
                      ["tiny", "cpu-small", "cpu-full", "full"],
                      "Sizes: tiny (smoke test, seconds), cpu-small "
                      "(minutes on 2 cores), cpu-full (FLIP only: all of "
                      "ML-100K, hours on 2 cores), full (official sizes); "
                      "each method's SPEC.presets.")
_PLM = launch.flag(flags.DEFINE_string, "plm", "minilm-l6",
                   "PLM short name or HF folder.")
_CTR = launch.flag(flags.DEFINE_string, "ctr", "dcnv2", "ID backbone.")
_SEED = launch.flag(flags.DEFINE_integer, "seed", 2012,
                    "Seed of every stage.")
_SEEDS = launch.flag(flags.DEFINE_list, "seeds", None, "Train every model "
                     "once per seed (e.g. 2012,2013,2014): mean ± std and "
                     "paired claims; default: --seed alone.")
_STAGES = launch.flag(flags.DEFINE_list, "stages", None,
                      "Subset of stages to run (default: all).")
_SET = launch.flag(flags.DEFINE_multi_string, "set", [],
                   "Config override, key=value in ml_collections' "
                   "--config.<key> syntax, for every stage whose config has "
                   "the key's section (e.g. --set=data.max_length=48, "
                   "--set=train.max_steps=20); prefix 'pretrain:' or "
                   "'finetune:' to scope it "
                   "(--set=pretrain:train.max_steps=5).")


def spec_of(method: str):
  """The ``workflow.Spec`` of ``method`` (its module's ``SPEC``)."""
  import importlib  # pylint: disable=g-import-not-at-top
  if method not in METHODS:
    raise app.UsageError(f"--method {method!r}: expected one of "
                         f"{', '.join(METHODS)}")
  return importlib.import_module(METHODS[method]).SPEC


def run_method(method: str, workdir: str, **kwargs) -> str:
  """Runs one method's spec through the contract of
  ``experiments.workflow``: ``workflow.run_all(SPEC, ...)`` with the run's
  arguments, the listed stages cut to the ones the method has
  (``SPEC.stage_names``)."""
  from experiments import workflow  # pylint: disable=g-import-not-at-top
  spec = spec_of(method)
  if kwargs.get("stages"):  # each method runs the listed stages it has
    kwargs = dict(kwargs, stages=[s for s in kwargs["stages"]
                                  if s in spec.stage_names])
  return workflow.run_all(spec, workdir=workdir, **kwargs)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  launch.init_runtime()
  from experiments import stages  # pylint: disable=g-import-not-at-top
  overrides = {}
  for item in _SET.value:
    if "=" not in item:
      raise app.UsageError(f"--set {item!r}: expected key=value")
    k, v = item.split("=", 1)
    overrides[k] = v
  workdir = os.path.abspath(_WORKDIR.value)
  kwargs = dict(
      dataset=_DATASET.value, data_dir=_DATA_DIR.value, preset=_PRESET.value,
      plm=_PLM.value, ctr=_CTR.value, seed=_SEED.value,
      stages=_STAGES.value, overrides=overrides,
      seeds=[int(x) for x in _SEEDS.value] if _SEEDS.value else None)
  methods = list(_METHOD.value)
  specs = {m: spec_of(m) for m in methods}  # an unknown one: refused here
  for m, spec in specs.items():  # before any method runs
    if _PRESET.value not in spec.presets:
      raise app.UsageError(f"--preset {_PRESET.value}: --method={m} has "
                           f"the presets {', '.join(spec.presets)}")
  if _STAGES.value:
    known = set().union(*(spec.stage_names for spec in specs.values()))
    unknown = [s for s in _STAGES.value if s not in known]
    if unknown:
      raise app.UsageError(f"--stages {unknown}: no method of {methods} has "
                           f"them; known: {sorted(known)}")
  if len(methods) == 1:
    table = run_method(methods[0], workdir, **kwargs)
    compile_cache.log_use()  # before the table: the table ends the output
    print(table)
    _print_path("report", os.path.join(workdir, "report.md"))
    return
  for m in methods:
    print(f"## {m}\n" + run_method(m, os.path.join(workdir, m), **kwargs))
    _print_path("report", os.path.join(workdir, m, "report.md"))
  table = stages.write_comparison(workdir, methods)
  compile_cache.log_use()
  print(table)
  _print_path("comparison", os.path.join(workdir, "comparison.md"))


def _print_path(what: str, path: str) -> None:
  """The line after a table (stdout): where its full report is."""
  print(f"{what}: {path}", flush=True)


if __name__ == "__main__":
  launch.run_main(main)
