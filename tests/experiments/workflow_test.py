"""The declarative experiments layer (experiments.workflow): a spec is
checked when it is made, the runner owns seeds, done-files and stage logs,
and plots are drawn from their declarations."""
import json
import pathlib

import ml_collections as mlc
import pytest

from experiments import workflow
from experiments import workflow_report
from experiments.workflow import Claim, Plot, Stage


def _config(a):
  del a
  return mlc.ConfigDict({"data": {"data_dir": "", "cache_dir": ""},
                         "seed": 0, "train": {"max_steps": 1},
                         "ckpt": {"init_from": ""}})


def _stage(name, auc, **kw):
  """A custom stage that writes a run's results.json and metrics.jsonl."""

  def run(ctx, folder, cfg):
    del ctx
    d = pathlib.Path(folder) / name
    d.mkdir(parents=True, exist_ok=True)
    seed = cfg.seed
    (d / "results.json").write_text(json.dumps(
        {"test/auc": auc + 0.001 * seed, "valid/auc": auc, "best_step": 2,
         "steps": 4, "seed": seed}))
    (d / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "valid/auc": auc, "train/loss": 1.0 / s})
        + "\n" for s in (2, 4)))
  return Stage(name, "custom", _config, run=run, done=f"{name}/results.json",
               **kw)


def _spec(**kw):
  ran = []
  args = dict(
      name="toy", title="Toy", presets=("tiny",),
      stages=(Stage("pre", "custom", _config, phase="pretrain",
                    run=lambda ctx, folder, cfg: ran.append(("pre", folder)),
                    done="pre.done"),
              _stage("base", 0.70), _stage("better", 0.75),
              Stage("count", "run", run=lambda ctx, folder, cfg: (
                  ran.append(("count", folder)),
                  (pathlib.Path(folder) / "count.done").write_text("")),
                    done="count.done")),
      check_with=("pre", "base"), rows=(("base", "Base"),
                                        ("better", "Better")),
      base="base", claims=(Claim("better", "base", "better beats base"),),
      plots=(Plot("auc.png", "Valid AUC", "valid AUC",
                  workflow.every_row((("base", "Base"),
                                      ("better", "Better")), "valid/auc")),
             Plot("none.png", "Nothing", "x", (("x", "base", "nope"),))))
  return workflow.Spec(**{**args, **kw}), ran


def test_a_need_that_is_no_earlier_stage_is_refused():
  with pytest.raises(workflow.SpecError, match=r"method 'toy': stage 'base' "
                     r"needs 'nope', which is no earlier stage; earlier: "
                     r"\['pre'\]"):
    _spec(stages=(Stage("pre", "pretrain", _config),
                  Stage("base", "train", _config, needs="nope")))
  with pytest.raises(workflow.SpecError, match="a custom stage: no run to "
                     "start from or export"):
    _spec(stages=(Stage("pre", "custom", _config, run=print, done="x"),
                  Stage("base", "train", _config, needs="pre")))
  with pytest.raises(workflow.SpecError, match="needs 'late'"):
    _spec(stages=(Stage("pre", "pretrain", _config),
                  Stage("base", "train", _config, needs="late"),
                  Stage("late", "pretrain", _config)))


@pytest.mark.parametrize("change,why", [
    ({"rows": (("base", "Base"), ("gone", "Gone"))},
     "row 'gone' names no stage"),
    ({"claims": (Claim("better", "gone", "x"),)},
     "claim 'x' names a row the spec lacks"),
    ({"check_with": ("pre", "gone")}, "check_with 'gone' names no stage"),
    ({"check_with": ("pre", "count")}, "a stage without a config builder"),
    ({"plots": (Plot("p.png", "P", "y", (("a", "gone", "k"),)),)},
     "plot p.png: series 'a' reads no stage's folder"),
    ({"default": ("pre", "gone")}, r"default stages \['gone'\]"),
])
def test_a_spec_naming_what_it_lacks_is_refused(change, why):
  with pytest.raises(workflow.SpecError, match=why):
    _spec(**change)


def test_stage_kinds_need_their_parts():
  with pytest.raises(workflow.SpecError, match="kind 'fit' is not one"):
    _spec(stages=(Stage("pre", "fit"),))
  with pytest.raises(workflow.SpecError, match="needs a config builder"):
    _spec(stages=(Stage("pre", "pretrain"),))
  with pytest.raises(workflow.SpecError, match="needs run and done"):
    _spec(stages=(Stage("pre", "custom", _config),))
  with pytest.raises(workflow.SpecError, match="listed twice"):
    _spec(stages=(Stage("pre", "pretrain", _config),) * 2)


def test_the_needed_folder_is_set_per_seed():
  spec, _ = _spec(stages=(Stage("pre", "pretrain", _config),
                          Stage("base", "train", _config, needs="pre"),
                          Stage("better", "train", _config)))
  ctx = workflow.Context(spec, workflow.Args("d", "tiny", "p", "c"), "raw",
                         "cache", "w", (1,), {"train.max_steps": "7"})
  cfg = ctx.config("base", 3, "w/seed3")
  assert cfg.ckpt.init_from == "w/seed3/pre" and cfg.seed == 3
  assert cfg.data.cache_dir == "cache" and cfg.train.max_steps == 7
  assert ctx.config("base", 3).ckpt.init_from == ""   # no seed folder


def test_runner_seeds_done_files_and_report(tmp_path):
  spec, ran = _spec()
  run = dict(dataset="synthetic", data_dir="", workdir=str(tmp_path),
             preset="tiny", plm="p", ctr="c", seed=1, seeds=[1, 2])
  text = workflow.run_all(spec, **run)
  # Per-seed stages in seed<N>/, the run-level one once in the workdir.
  assert ran == [("pre", str(tmp_path / "seed1")),
                 ("pre", str(tmp_path / "seed2")), ("count", str(tmp_path))]
  assert "| Better | 0.7515 ± 0.0007 |" in text
  assert "- better beats base: holds" in text
  logged = json.loads((tmp_path / "seed1" / "stages.json").read_text())
  assert set(logged) == {"pre", "base", "better"}
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["claims"][0]["verdict"] == "holds"
  md = (tmp_path / "report.md").read_text()
  # Plots from their declarations: drawn where a series has points.
  assert "## Valid AUC\n\n![Valid AUC](auc.png)" in md
  assert (tmp_path / "auc.png").stat().st_size > 1000
  assert not (tmp_path / "none.png").exists() and "none.png" not in md
  assert "## Stages (seed 1 of 2)" in md
  # A rerun skips every stage whose done-file exists ('pre' writes none:
  # it runs again).
  workflow.run_all(spec, **run)
  assert ran[3:] == [("pre", str(tmp_path / "seed1")),
                     ("pre", str(tmp_path / "seed2"))]


def test_stages_selects_and_unknown_stages(tmp_path):
  spec, ran = _spec(stages=(
      Stage("pre", "custom", _config, phase="pretrain", select="both",
            run=lambda ctx, folder, cfg: ran.append("pre"), done="pre.done"),
      _stage("base", 0.7, select="both"), _stage("better", 0.75)))
  assert spec.stage_names == ("both", "better")
  run = dict(dataset="synthetic", data_dir="", workdir=str(tmp_path),
             preset="tiny", plm="p", ctr="c", seed=1)
  with pytest.raises(ValueError, match=r"unknown stages \['base'\]"):
    workflow.run_all(spec, stages=["base"], **run)
  workflow.run_all(spec, stages=["both"], **run)
  assert ran == ["pre"] and (tmp_path / "base" / "results.json").exists()
  assert not (tmp_path / "better").exists()


def test_default_report_layout(tmp_path):
  spec, _ = _spec()
  assert workflow_report.DEFAULT[0] is workflow_report.results
  (tmp_path / "base").mkdir()
  (tmp_path / "base" / "results.json").write_text(json.dumps(
      {"test/auc": 0.7, "valid/auc": 0.7, "best_step": 1}))
  workflow_report.write(spec, str(tmp_path), dataset="d", preset="tiny")
  md = (tmp_path / "report.md").read_text()
  assert md.startswith("# Toy run report: d\n\nPreset `tiny`;")
  assert "## Results" in md and "## Stages" in md
