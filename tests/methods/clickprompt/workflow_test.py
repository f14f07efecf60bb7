"""ClickPrompt's run_all workflow: the report and claims (fast), and the
whole main job on the tiny preset (slow)."""
import json

import pytest

from experiments import clickprompt_workflow as wf


def _results(workdir, aucs):
  for stage, auc in aucs.items():
    d = workdir / stage
    d.mkdir(parents=True)
    res = {"test/auc": auc, "test/logloss": 0.6, "valid/auc": auc,
           "best_step": 10}
    if stage == "prefix_add":
      res["alpha"] = 0.4
    (d / "results.json").write_text(json.dumps(res))
    (d / "metrics.jsonl").write_text(json.dumps(
        {"step": 10, "valid/auc": auc, "train/alpha": 0.4}) + "\n")


def test_report_states_the_claims(tmp_path):
  _results(tmp_path, {"base_id": 0.800, "nlp_only": 0.790, "add": 0.8055,
                      "prompt_add": 0.803, "prefix_add_nopt": 0.802,
                      "ctr_only": 0.8005, "prefix_add": 0.806})
  table = wf.write_report(str(tmp_path), dataset="synthetic", preset="tiny")
  assert "| ClickPrompt with PLM (prefix_add) | 0.8060 |" in table
  # The shared results table: how each model stopped, beside its metrics.
  assert "| best step | stopped | alpha (reach) | budget | wall s |" in table
  summary = json.loads((tmp_path / "summary.json").read_text())
  verdicts = {c["claim"]: c for c in summary["claims"]}
  assert len(verdicts) == len(wf.CLAIMS)
  no_plm = verdicts[wf.CLAIMS[0][2]]
  assert no_plm["holds"] and not no_plm["margin_ok"] and no_plm["must"]
  layer = verdicts[wf.CLAIMS[-1][2]]
  # Runs without config.json: no share of an official budget to state.
  words = "not supported (no official budget stated)"
  assert not layer["holds"] and layer["verdict"] == words
  report = (tmp_path / "report.md").read_text()
  assert words in report and "valid_auc.png" in report
  assert summary["models"]["ClickPrompt with PLM (prefix_add)"][
      "test/auc"] == 0.806


def test_report_over_seeds(tmp_path):
  for seed, shift in ((1, 0.0), (2, 0.002)):
    _results(tmp_path / f"seed{seed}", {
        "base_id": 0.800 + shift, "ctr_only": 0.8015 + shift,
        "prefix_add": 0.799 + 3 * shift})
  table = wf.write_report(str(tmp_path))
  assert "| ClickPrompt w/o PLM (ctr_only) | 0.8025 ± 0.0014 |" in table
  verdicts = {v["claim"]: v for v in json.loads(
      (tmp_path / "summary.json").read_text())["claims"]}
  assert verdicts[wf.CLAIMS[0][2]]["verdict"] == "holds"
  assert verdicts[wf.CLAIMS[1][2]]["verdict"] == (
      "not supported (no official budget stated)")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_main_job_tiny(tiny_bert_dir, tmp_path):
  table = wf.run_all(
      dataset="synthetic", data_dir="", workdir=str(tmp_path), preset="tiny",
      plm=str(tiny_bert_dir), ctr="dcnv2", seed=42,
      stages=["prepare", "pretrain", "base_id", "ctr_only", "prefix_add",
              "export"],
      overrides={"train.max_steps": "4", "finetune:train.eval_every_steps":
                 "2", "clickprompt.num_prompt": "2"})
  assert "ClickPrompt w/o PLM" in table
  for name in wf.EXPORTS:
    check = json.loads((tmp_path / f"export_{name}" / "check.json")
                       .read_text())
    assert check["max_abs_diff"] <= 1e-5
  stages = json.loads((tmp_path / "stages.json").read_text())
  assert {"pretrain", "prefix_add", "export_prefix_add"} <= set(stages)
