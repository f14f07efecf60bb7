"""The report says when a pretraining run's ICL ended at chance."""
import json

from experiments import flip_workflow
from experiments import pretrain_check
from experiments.configs import flip_pretrain


def _pre(folder, name, accs, batch=64):
  d = folder / name
  d.mkdir(parents=True)
  config = flip_pretrain.get_config("dataset=synthetic,preset=tiny")
  config.train.batch_size = batch
  (d / "config.json").write_text(json.dumps(config.to_dict()))
  (d / "metrics.jsonl").write_text("".join(
      json.dumps({"step": 10 * (i + 1), "train/icl_acc": a,
                  "train/icl_loss": 4.2}) + "\n" for i, a in enumerate(accs)))


def test_at_chance_is_named_per_run_and_seed(tmp_path):
  s1, s2 = tmp_path / "seed1", tmp_path / "seed2"
  _pre(s1, "pretrain", [0.3, 0.0156])            # ends at chance (1/64)
  _pre(s1, "pretrain_no_mtm", [0.0156, 0.2])     # learned
  _pre(s2, "pretrain", [0.05])                   # 3.2x chance: learned
  (s2 / "pretrain_no_icl").mkdir()               # no ICL metrics at all
  notes = pretrain_check.notes(str(tmp_path))
  assert len(notes) == 1
  assert notes[0].startswith("- pretrain (seed 1): ICL at chance at its "
                             "last step (20, training batches, dropout on)")
  assert "1/64 = 0.0156" in notes[0]
  st = pretrain_check.icl_status(str(s1 / "pretrain_no_mtm"))
  assert st["chance"] == 1 / 64 and not st["at_chance"]
  assert pretrain_check.icl_status(str(s2 / "pretrain_no_icl")) is None


def test_the_held_out_batch_in_eval_mode_decides_when_logged(tmp_path):
  """Training-mode accuracy at chance, the held-out batch's well above it:
  the held-out figure (eval mode, no dropout) is the one judged."""
  _pre(tmp_path, "pretrain", [0.0156])
  with open(tmp_path / "pretrain" / "metrics.jsonl", "a") as f:
    f.write(json.dumps({"step": 30, "train/icl_acc": 0.0156,
                        "heldout/icl_acc": 0.25, "heldout/icl_loss": 2.0,
                        "heldout/icl_rows": 32.0}) + "\n")
  st = pretrain_check.icl_status(str(tmp_path / "pretrain"))
  assert st["source"].startswith("a fixed held-out batch")
  assert st["batch"] == 32 and st["icl_acc"] == 0.25 and not st["at_chance"]
  assert not pretrain_check.notes(str(tmp_path))


def test_the_report_carries_the_note(tmp_path):
  _pre(tmp_path, "pretrain", [0.001], batch=1024)
  d = tmp_path / "base_id"
  d.mkdir()
  (d / "results.json").write_text(json.dumps(
      {"best_step": 1, "steps": 1, "test/auc": 0.7, "valid/auc": 0.7}))
  printed = flip_workflow.write_report(str(tmp_path))
  assert "pretrain: ICL at chance" in printed
  md = (tmp_path / "report.md").read_text()
  assert "## Pretraining" in md and "1/1024" in md
