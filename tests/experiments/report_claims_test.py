"""Claims decided on per-seed paired differences, as the report states
them: the AUCs shown are the means over the seeds both rows ran."""
import json

import pytest

from experiments import flip_workflow
from experiments import report


def verdicts(rows):
  """The verdicts of FLIP's claims on ``rows``."""
  return [v for _, v in report.decide(rows, flip_workflow.CLAIMS)]


def lines(rows):
  """The report lines of FLIP's claims on ``rows``."""
  return [report.claim_line(c, v)
          for c, v in report.decide(rows, flip_workflow.CLAIMS)]


def _run(root, seed, stage, auc):
  d = root / f"seed{seed}" / stage
  d.mkdir(parents=True)
  (d / "results.json").write_text(json.dumps(
      {"best_step": 5, "steps": 10, "seed": seed, "test/auc": auc,
       "valid/auc": auc}))


def _rows(tmp_path):
  joint = {2012: 0.70, 2013: 0.68, 2014: 0.66}
  for seed, auc in joint.items():
    _run(tmp_path, seed, "flip_joint", auc)
    _run(tmp_path, seed, "base_id", auc - 0.01 if seed != 2014 else 0.67)
  _run(tmp_path, 2012, "flip_joint_no_mlm", 0.65)  # one seed only
  return report.collect(str(tmp_path), flip_workflow.ROWS,
                      flip_workflow.SPEC.base)


def test_all_seeds_paired(tmp_path):
  c = {v["claim"]: v for v in verdicts(_rows(tmp_path))}
  v = next(v for k, v in c.items() if k.startswith("FLIP (joint) beats the "
                                                     "ID model"))
  assert v["seeds"] == [2012, 2013, 2014] and not v["subset"]
  assert v["test/auc_diffs"] == pytest.approx([0.01, 0.01, -0.01])
  # No config.json: the runs' share of the official budget is unknown.
  assert v["verdict"] == "not supported (no official budget stated)"
  assert v["seeds_positive"] == 2 and v["budget_share"] is None
  assert v["test/auc"] == pytest.approx([0.68, 0.68 - 0.01 / 3])


def test_an_ablation_on_fewer_seeds_shows_the_paired_seeds_means(tmp_path):
  rows = _rows(tmp_path)
  v = next(v for v in verdicts(rows)
           if v["claim"].startswith("MLM helps"))
  assert v["seeds"] == [2012] and v["subset"]
  # Seed 2012's joint model, not the mean over its three seeds (0.68).
  assert v["test/auc"] == pytest.approx([0.70, 0.65])
  assert v["test/auc_diff"] == pytest.approx(0.05)
  line = next(x for x in lines(rows)
              if x.startswith("- MLM helps"))
  assert "test AUC 0.7000 vs 0.6500, +0.0500" in line
  assert "on seed 2012 only" in line


def test_relaimpr_is_over_the_spec_base_and_not_for_the_base_itself(
    tmp_path):
  for seed, auc in ((2012, 0.70), (2013, 0.68)):
    _run(tmp_path, seed, "flip_joint", auc)
    _run(tmp_path, seed, "base_plm", auc - 0.05)
  rows = {r["stage"]: r for r in report.collect(
      str(tmp_path), flip_workflow.ROWS, base="base_plm")}
  assert "rela_impr" not in rows["base_plm"]
  assert rows["flip_joint"]["rela_impr"]["values"] == pytest.approx(
      [0.05 / 0.15, 0.05 / 0.13])
