"""How each finetuning run ended, as the report states it: early stopping,
the budget after the best evaluation, or cut off while still rising."""
import json

from experiments import flip_workflow
from experiments import report


def _run(root, stage, *, best, steps, done, seed=2012, auc=0.7):
  d = root / stage
  d.mkdir(parents=True)
  (d / "results.json").write_text(json.dumps(
      {"best_step": best, "steps": steps, "seed": seed, "test/auc": auc,
       "valid/auc": auc}))
  (d / "early_stopping.json").write_text(json.dumps(
      {"10": {"done": False}, str(steps): {"done": done}}))


def test_stop_reasons_and_the_notes_name_only_models_cut_off(tmp_path):
  _run(tmp_path, "base_id", best=30, steps=60, done=True)
  _run(tmp_path, "base_plm", best=90, steps=90, done=False)
  _run(tmp_path, "flip_plm", best=60, steps=90, done=False)
  rows = report.collect(str(tmp_path), flip_workflow.ROWS,
                      flip_workflow.SPEC.base)
  stops = {r["stage"]: r["stops"] for r in rows}
  assert stops == {"base_id": [report.EARLY], "base_plm": [report.RISING],
                   "flip_plm": [report.BUDGET]}
  notes = report.budget_notes(rows)
  assert len(notes) == 1 and "PLM only" in notes[0] and "1 of 1" in notes[0]
  table, _ = report.results_table(str(tmp_path), flip_workflow.ROWS,
                                     flip_workflow.SPEC.base)
  assert "| budget, rising |" in table
  assert report.models(rows)["FLIP_PLM"]["stopped"] == [report.BUDGET]


def test_a_run_without_a_tracker_is_judged_by_its_best_step(tmp_path):
  d = tmp_path / "x"
  d.mkdir()
  assert report.stop_reason(str(d), {"best_step": 5, "steps": 5}) == \
      report.RISING
  assert report.stop_reason(str(d), {"best_step": 3, "steps": 5}) == \
      report.BUDGET
