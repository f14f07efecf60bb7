"""Every row carries its share of the official budget, and the verdict's
words follow the evidence: holds (every seed positive), contradicted (every
seed negative at >= 90 % of the budget), else not supported at N %."""
import json

import pytest

from experiments import budget
from experiments import flip_workflow
from experiments import report
from experiments.configs import official
from tests.experiments import report_claims_test as rct  # pylint: disable=g-bad-import-order


def _write(d, name, obj):
  d.mkdir(parents=True, exist_ok=True)
  (d / name).write_text(json.dumps(obj))


def _pretrain(root, steps, batch=64, rows=9000, schedule="linear"):
  d = root / "pretrain"
  _write(d, "config.json", {
      "task": "flip_pretrain", "pretrain": {},
      "train": {"batch_size": batch, "num_epochs": 1, "max_steps": steps},
      "optim": {"schedule": {"name": schedule, "epochs": 3}}})
  _write(d, "schedule.json", {"train_rows": rows, "batch_size": batch,
                              "steps_per_epoch": rows // batch})
  (d / "metrics.jsonl").write_text(json.dumps({"step": steps}) + "\n")
  return d


def _finetune(root, stage, mode, auc, *, steps, batch, rows=8000, init="",
              early=False, patience_evals=3, eval_every=None, seed=1):
  d = root / stage
  per_epoch = rows // batch
  _write(d, "config.json", {
      "task": "flip_finetune", "finetune": {"mode": mode},
      "ckpt": {"init_from": init},
      "train": {"batch_size": batch, "num_epochs": 25}})
  _write(d, "schedule.json", {
      "train_rows": rows, "batch_size": batch, "steps_per_epoch": per_epoch,
      "eval_every": eval_every or per_epoch,
      "patience_evals": patience_evals})
  _write(d, "early_stopping.json", {str(steps): {"done": early}})
  _write(d, "results.json", {"best_step": steps, "steps": steps,
                             "seed": seed, "test/auc": auc,
                             "valid/auc": auc})
  return d


def test_share_of_pretraining_examples_and_finetuning_epochs(tmp_path):
  pre = _pretrain(tmp_path, steps=350)
  b = budget.run_budget(str(pre))
  # 350 x 64 examples against 30 epochs of 9,000 rows.
  assert b["share"] == pytest.approx(350 * 64 / (30 * 9000))
  assert b["official_steps"] == 30 * 9  # ceil(9000 / 1024) = 9 per epoch
  assert b["schedule"].startswith("linear")
  # A PLM model cut at 0.5 epoch of the official 25.
  ft = _finetune(tmp_path, "flip_plm", "plm", 0.6, steps=31, batch=128,
                 init=str(pre))
  rb = budget.row_budget(str(ft))
  assert rb["finetune"]["share"] == pytest.approx(31 * 128 / 8000 / 25)
  assert rb["pretrain"]["share"] == pytest.approx(350 * 64 / (30 * 9000))
  assert rb["share"] == pytest.approx(31 * 128 / 8000 / 25)  # the smaller


def test_early_stopping_counts_as_the_full_budget_only_under_official_patience(
    tmp_path):
  # Stopped early with patience 3 evaluations at one per epoch: 3 epochs.
  ok = _finetune(tmp_path, "a", "id", 0.7, steps=40, batch=1000, early=True)
  assert budget.run_budget(str(ok))["share"] == 1.0
  # Stopped early with 3 evaluations at 8 per epoch: 3/8 epoch of patience.
  short = _finetune(tmp_path, "b", "id", 0.7, steps=40, batch=1000,
                    early=True, eval_every=1)
  b = budget.run_budget(str(short))
  assert b["patience_epochs"] == pytest.approx(3 / 8)
  assert b["share"] == pytest.approx(40 * 1000 / 8000 / 20)


def test_compressed_cosine_is_named():
  off = official.FLIP_PRETRAIN
  cfg = {"optim": {"schedule": {"name": "cosine_epoch", "epochs": 30}}}
  assert budget.schedule_note(cfg, off) == "official"
  cfg["optim"]["schedule"]["epochs"] = 3
  assert budget.schedule_note(cfg, off, 2.5).startswith("compressed")
  # Within the first epoch a per-epoch cosine is the official curve's start.
  assert budget.schedule_note(cfg, off, 0.4).startswith("official")


@pytest.mark.parametrize("diffs,share,words", [
    ([0.01, 0.02, 0.001], 0.01, "holds"),
    ([-0.01, -0.02, -0.001], 0.95, "contradicted"),
    ([-0.01, -0.02, -0.001], 0.0083, "not supported at 0.83 % of the budget"),
    ([0.01, -0.02, 0.001], 1.0, "not supported at 100 % of the budget"),
    ([-0.01], None, "not supported (no official budget stated)"),
])
def test_verdict_words(diffs, share, words):
  assert report.verdict(diffs, share) == words


def test_claims_carry_the_smaller_share_and_the_table_shows_it(tmp_path):
  for seed in (1, 2, 3):
    root = tmp_path / f"seed{seed}"
    pre = _pretrain(root, steps=350)
    _finetune(root, "flip_id", "id", 0.70 - 0.001 * seed, steps=40,
              batch=1000, early=True, init=str(pre), seed=seed)
    _finetune(root, "base_id", "id", 0.71, steps=40, batch=1000, early=True,
              seed=seed)
  table, rows = report.results_table(str(tmp_path), flip_workflow.ROWS,
                                     flip_workflow.SPEC.base)
  by = {r["stage"]: r for r in rows}
  assert by["base_id"]["share"] == 1.0
  assert by["flip_id"]["share"] == pytest.approx(350 * 64 / 270000)
  assert "| 100 % |" in table and "| 8.3 % |" in table
  v = next(c for c in rct.verdicts(rows)
           if c["claim"].startswith("FLIP_ID beats"))
  assert v["verdict"] == "not supported at 8.3 % of the budget"
  assert v["p_sign_flip"] == pytest.approx(0.25)
  line = next(x for x in rct.lines(rows)
              if x.startswith("- FLIP_ID"))
  assert "sign-flip p = 0.250" in line and "at 8.3 % of the official" in line


def test_alpha_variant_config():
  from experiments.configs import flip_finetune  # pylint: disable=g-import-not-at-top
  cfg = flip_finetune.get_config("preset=full,mode=joint,alpha=sigmoid")
  assert cfg.finetune.alpha_param == "sigmoid"
  assert cfg.optim.param_groups[0] == (
      r"^alpha$", flip_finetune.ALPHA_SIGMOID_LR[True])
  official_cfg = flip_finetune.get_config("preset=full,mode=joint")
  assert official_cfg.finetune.alpha_param == "raw"
  assert all(r != r"^alpha$" for r, _ in official_cfg.optim.param_groups)
  # Official patience counts epochs in the full preset.
  assert official_cfg.train.patience_unit == "epochs"
  with pytest.raises(ValueError, match="alpha"):
    flip_finetune.get_config("mode=id,alpha=sigmoid")


def test_alpha_reach_reads_named_param_groups(tmp_path):
  """A param group may carry a name (ClickPrompt's optimizer groups): alpha
  takes the first group whose regex matches it, else the base rate."""
  groups = [["^(plm|lm_head|nlp_head)/", 1e-3, "plm"], ["^alpha$", 0.5]]
  _write(tmp_path, "config.json", {"task": "clickprompt_finetune",
                                   "optim": {"lr": 0.01,
                                             "param_groups": groups}})
  assert budget.alpha_reach(str(tmp_path), 10) == pytest.approx(5.0)
  _write(tmp_path, "config.json", {"task": "clickprompt_finetune",
                                   "optim": {"lr": 0.01,
                                             "param_groups": groups[:1]}})
  assert budget.alpha_reach(str(tmp_path), 10) == pytest.approx(0.1)
