"""The declarative experiments layer: each method is a ``Spec``, one runner.

The contract ``experiments.run_all`` calls a method through: the module
named in ``run_all.METHODS`` defines ``SPEC``, a ``Spec``. run_all checks
``--preset`` against ``SPEC.presets`` and ``--stages`` against
``SPEC.stage_names`` (before any method runs), then calls ``run_all(SPEC,
*, dataset, data_dir, workdir, preset, plm, ctr, seed, stages, overrides,
seeds) -> str`` (the results table and claims it prints). Nothing else of
the module is read.

A spec lists its stages in run order, each a ``Stage`` of one kind:

  prepare   run-level, before the seeds: the data in ``<workdir>/data``
  pretrain  per seed: a pretraining run, done once ``pretrain_done.json``
  train     per seed: an evaluated training run, done once ``results.json``
  export    per seed: the PyTorch export of the stage it ``needs``, parity
            checked, done once ``check.json``
  custom    per seed: ``run(ctx, seed_folder, config)``, done once ``done``
  run       run-level, after the seeds: ``run(ctx, workdir, config)``

``needs`` names an earlier stage whose folder the stage starts from (its
path set at ``needs_key``: ``ckpt.init_from`` by default) or exports;
``select`` is the ``--stages`` name that runs it (several stages may share
one). The runner owns the rest: the stage and seed checks, the override
checks (``stages.check_overrides`` on the configs of ``check_with``),
``run_identity.claim``, per-seed folders (``stages.seed_folders``), the
``StageLog`` of each folder, the done-files and the report files
(``experiments.workflow_report``).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, NamedTuple

from experiments import run_identity
from experiments import stages as stages_lib

KINDS = ("prepare", "pretrain", "train", "export", "custom", "run")
# Kinds run once per run (in the workdir), not once per seed.
RUN_LEVEL = ("prepare", "run")
# The done-file of each kind, relative to the stage's folder.
DONE = {"prepare": "stats.json", "pretrain": stages_lib.PRETRAIN_DONE,
        "train": stages_lib.RESULTS, "export": stages_lib.CHECK}
# The config phase of each kind (which ``--set`` scope applies).
PHASES = {"pretrain": "pretrain", "train": "finetune"}


class SpecError(ValueError):
  """A method's spec that the runner cannot run."""


@dataclasses.dataclass(frozen=True)
class Args:
  """The run's settings a stage's config builder reads."""
  dataset: str
  preset: str
  plm: str
  ctr: str

  def text(self, *fields: str) -> str:
    """A config's variant argument: ``dataset=x,preset=y`` of ``fields``."""
    return ",".join(f"{f}={getattr(self, f)}" for f in fields)


@dataclasses.dataclass(frozen=True)
class Stage:
  """One stage: what it runs, what it needs, which --stages name runs it."""
  name: str                    # its name in stages.json
  kind: str                    # one of KINDS
  config: Callable[[Args], Any] | None = None   # the config before --set
  needs: str | None = None     # an earlier stage it starts from / exports
  needs_key: str = "ckpt.init_from"   # where the needed folder is set
  select: str | None = None    # its --stages name (default: name)
  folder: str | None = None    # its folder (default: name; prepare: data)
  phase: str | None = None     # its --set phase (default: by kind)
  overrides: tuple[tuple[str, str], ...] = ()   # after the run's --set
  run: Callable[..., Any] | None = None   # prepare / custom / run kinds
  done: str | None = None      # its done-file (default: by kind)
  label: str | None = None     # how the report names it (default: needs)

  @property
  def selector(self) -> str:
    return self.select or self.name

  @property
  def dir(self) -> str:
    return self.folder or ("data" if self.kind == "prepare" else self.name)

  @property
  def done_file(self) -> str:
    """Its done-file relative to its base folder (the seed's folder, or
    the workdir for a run-level stage)."""
    return self.done or os.path.join(self.dir, DONE[self.kind])


class Claim(NamedTuple):
  """better row beats worse row; ``must`` / ``margin`` where a spec grades
  its claims (the verdict then says must / should and margin reached)."""
  better: str
  worse: str
  text: str
  must: bool | None = None
  margin: float | None = None


@dataclasses.dataclass(frozen=True)
class Plot:
  """A line plot of the first seed's ``metrics.jsonl`` values: ``series``
  are (label, stage folder, metric key); ``x`` is ``step`` or
  ``examples`` (training examples seen, log scale)."""
  file: str
  title: str
  ylabel: str
  series: tuple[tuple[str, str, str], ...]
  heading: str | None = None   # the report's heading (default: title)
  x: str = "step"


def every_row(rows, key: str) -> tuple[tuple[str, str, str], ...]:
  """Plot series of ``key`` for every results row (its name as label)."""
  return tuple((name, stage, key) for stage, name in rows)


@dataclasses.dataclass(frozen=True)
class Spec:
  """A method's workflow, rows, claims, plots and report layout."""
  name: str                    # --method; run.json's method
  title: str                   # the report's title
  presets: tuple[str, ...]
  stages: tuple[Stage, ...]
  check_with: tuple[str, str]  # the pretraining and finetuning stage whose
  #                              configs --set is checked against
  rows: tuple[tuple[str, str], ...]   # (stage folder, row name)
  base: str                    # the row RelaImpr is computed over
  claims: tuple[Claim, ...] = ()
  plots: tuple[Plot, ...] = ()
  report: tuple[Callable[..., list[str]], ...] = ()   # sections, in order
  default: tuple[str, ...] | None = None   # default --stages (None: all)
  uses_plm: bool = True        # False: --plm is no part of the run
  claims_heading: str = "The paper's claims on this run"
  verdicts: Callable[..., list] | None = None   # extra (verdict, line)
  summary: Callable[..., dict] | None = None    # extra summary.json entries
  printed: Callable[..., list[str]] | None = None   # extra printed lines

  def __post_init__(self):
    why = spec_problem(self)
    if why:
      raise SpecError(f"method {self.name!r}: {why}")

  @property
  def stage_names(self) -> tuple[str, ...]:
    """Every --stages name, in run order."""
    return tuple(dict.fromkeys(s.selector for s in self.stages))

  @property
  def default_stages(self) -> tuple[str, ...]:
    return self.default or self.stage_names

  def stage(self, name: str) -> Stage:
    return next(s for s in self.stages if s.name == name)


def spec_problem(spec: Spec) -> str | None:
  """What makes ``spec`` unrunnable (None: nothing): an unknown kind, a
  stage named twice, a need that is no earlier stage, a missing builder or
  done-file, rows / claims / plots naming no stage."""
  seen, names = {}, [s.name for s in spec.stages]
  for s in spec.stages:
    if s.kind not in KINDS:
      return f"stage {s.name!r}: kind {s.kind!r} is not one of {KINDS}"
    if s.name in seen:
      return f"stage {s.name!r} is listed twice"
    if s.needs is not None and s.needs not in seen:
      return (f"stage {s.name!r} needs {s.needs!r}, which is no earlier "
              f"stage; earlier: {list(seen)}")
    if s.needs is not None and seen[s.needs].kind not in PHASES:
      return (f"stage {s.name!r} needs {s.needs!r}, a {seen[s.needs].kind} "
              "stage: no run to start from or export")
    if s.kind in PHASES and s.config is None:
      return f"stage {s.name!r}: a {s.kind} stage needs a config builder"
    if s.kind in ("custom", "run") and (s.run is None or s.done is None):
      return f"stage {s.name!r}: a {s.kind} stage needs run and done"
    seen[s.name] = s
  folders = {s.dir for s in spec.stages}
  wanted = ([(f"check_with {n!r}", n) for n in spec.check_with]
            + [(f"row {r!r}", r) for r, _ in spec.rows])
  for label, n in wanted:
    if n not in names:
      return f"{label} names no stage; stages: {names}"
  if any(seen[n].config is None for n in spec.check_with):
    return f"check_with {spec.check_with}: a stage without a config builder"
  rows = {r for r, _ in spec.rows}
  for c in spec.claims:
    if c.better not in rows or c.worse not in rows:
      return f"claim {c.text!r} names a row the spec lacks"
  for p in spec.plots:
    for label, stage, _ in p.series:
      if stage not in folders:
        return f"plot {p.file}: series {label!r} reads no stage's folder"
  unknown = set(spec.default or ()) - set(spec.stage_names)
  if unknown:
    return f"default stages {sorted(unknown)} are no stage's --stages name"
  return None


@dataclasses.dataclass(frozen=True)
class Context:
  """One run of a spec: what stage configs and custom stages read."""
  spec: Spec
  args: Args
  data_dir: str
  cache_dir: str
  workdir: str
  seeds: tuple[int, ...]
  overrides: dict[str, str]

  def config(self, name: str, seed: int, folder: str | None = None):
    """Stage ``name``'s config for ``seed``: its builder's, the folder it
    needs (under the seed's ``folder``; none without one) set, then the
    run-wide fields and the overrides of its phase."""
    stage = self.spec.stage(name)
    cfg = stage.config(self.args)
    if stage.needs is not None:
      stages_lib.set_field(cfg, stage.needs_key, os.path.join(
          folder, self.spec.stage(stage.needs).dir) if folder else "")
    return stages_lib.stage_config(
        cfg, stage.phase or PHASES.get(stage.kind, "finetune"),
        data_dir=self.data_dir, cache_dir=self.cache_dir, seed=seed,
        overrides={**self.overrides, **dict(stage.overrides)})


def check_configs(spec: Spec, args: Args, data_dir: str, seed: int) -> list:
  """The configs ``--set`` is checked against (``spec.check_with``, no
  overrides, no cache, no needed folder), in ``stages.PHASES`` order."""
  ctx = Context(spec, args, data_dir, "", "", (seed,), {})
  return [ctx.config(name, seed) for name in spec.check_with]


def run_all(spec: Spec, *, dataset: str, data_dir: str, workdir: str,
            preset: str, plm: str, ctr: str, seed: int, stages=None,
            overrides: dict[str, str] | None = None,
            seeds: list[int] | None = None) -> str:
  """Runs the selected stages of ``spec``; returns the printed table.

  With several ``seeds`` every per-seed stage runs once per seed in
  ``<workdir>/seed<N>/`` (run-level stages once, on the first seed); the
  report shows mean ± std and decides each claim on per-seed paired
  differences. One seed keeps the stages directly in the workdir.
  """
  from experiments import workflow_report  # pylint: disable=g-import-not-at-top
  overrides = overrides or {}
  selected, seeds = stages_lib.run_args(stages, spec.stage_names,
                                        spec.default_stages, seeds, seed)
  os.makedirs(workdir, exist_ok=True)
  args = Args(dataset=dataset, preset=preset, plm=plm, ctr=ctr)
  stages_lib.check_overrides(overrides, check_configs(spec, args, data_dir,
                                                      seeds[0]))
  run_identity.claim(workdir, spec.name, dict(  # before any stage writes
      dataset=dataset, data_dir=data_dir, preset=preset, ctr=ctr,
      overrides=overrides, seeds=seeds, **({"plm": plm} if spec.uses_plm
                                            else {})))
  # One processed-data cache for every stage and seed of the run.
  ctx = Context(spec, args, data_dir, os.path.join(workdir, ".flip_jax_cache"),
                workdir, tuple(seeds), overrides)
  chosen = [s for s in spec.stages if s.selector in selected]
  run_stages(ctx, [s for s in chosen if s.kind == "prepare"], workdir,
             seeds[0])
  for s, folder in stages_lib.seed_folders(workdir, seeds):
    os.makedirs(folder, exist_ok=True)
    run_stages(ctx, [x for x in chosen if x.kind not in RUN_LEVEL], folder,
               s)
  run_stages(ctx, [s for s in chosen if s.kind == "run"], workdir, seeds[0])
  return workflow_report.write(spec, workdir, dataset=dataset, preset=preset)


def run_stages(ctx: Context, chosen, folder: str, seed: int) -> None:
  """``chosen`` stages in ``folder`` (a seed's, or the workdir), each
  skipped once its done-file exists, timed in ``folder``'s stages.json."""
  log = stages_lib.StageLog(folder)
  for stage in chosen:
    cfg = ctx.config(stage.name, seed, folder) if stage.config else None
    log.run(stage.name,
            lambda s=stage: os.path.exists(os.path.join(folder, s.done_file)),
            lambda s=stage, c=cfg: _run(ctx, s, c, folder))


def _run(ctx: Context, stage: Stage, cfg, folder: str):
  """What one stage does (its done-file not yet there)."""
  out = os.path.join(folder, stage.dir)
  if stage.kind == "pretrain":
    return stages_lib.run_pretrain(cfg, out)
  if stage.kind == "train":
    return stages_lib.run_train(cfg, out)
  if stage.kind == "export":
    return stages_lib.run_export(
        os.path.join(folder, ctx.spec.stage(stage.needs).dir), out)
  if stage.run is None:  # the default prepare
    return stages_lib.prepare_data(cfg, folder)
  return stage.run(ctx, folder, cfg)
