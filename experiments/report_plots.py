"""The PNG plots of an ``experiments.run_all`` workdir's report."""
from __future__ import annotations

import os

from experiments.report_io import batch_size, read_jsonl, seed_dirs


def plots(workdir: str, rows) -> list[tuple[str, str]]:
  """Writes the PNG plots (of the first seed); returns (title, file) pairs.

  ``rows``: (stage, name) of the finetuned models whose valid AUC is drawn.

  Training curves are drawn against training examples seen (the models'
  batches differ, 32 to 1,024), not steps.
  """
  out_dir, workdir = workdir, seed_dirs(workdir)[0][1]
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  made = []
  pre = read_jsonl(os.path.join(workdir, "pretrain", "metrics.jsonl"))
  if pre:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in ("train/mlm_loss", "train/mtm_loss", "train/icl_loss"):
      pts = [(r["step"], r[key]) for r in pre if key in r]
      if pts:
        ax.plot(*zip(*pts), label=key.split("/")[1])
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("FLIP pretraining losses")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "pretrain_losses.png"), dpi=100)
    plt.close(fig)
    made.append(("Pretraining losses", "pretrain_losses.png"))
  fig, ax = plt.subplots(figsize=(6, 3.5))
  any_auc = False
  for key, name in rows:
    recs = read_jsonl(os.path.join(workdir, key, "metrics.jsonl"))
    bs = batch_size(os.path.join(workdir, key)) or 1
    pts = [(r["step"] * bs, r["valid/auc"]) for r in recs
           if "valid/auc" in r]
    if pts:
      any_auc = True
      ax.plot(*zip(*pts), marker="o", label=name)
  if any_auc:
    ax.set_xlabel("training examples")
    ax.set_xscale("log")
    ax.set_ylabel("valid AUC")
    ax.set_title("Validation AUC during finetuning")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "valid_auc.png"), dpi=100)
    made.append(("Validation AUC per finetuning mode", "valid_auc.png"))
  plt.close(fig)
  recs = read_jsonl(os.path.join(workdir, "flip_joint", "metrics.jsonl"))
  pts = [(r["step"], r["train/alpha"]) for r in recs if "train/alpha" in r]
  if pts:
    fig, ax = plt.subplots(figsize=(6, 3.0))
    ax.plot(*zip(*pts))
    ax.set_xlabel("finetuning step")
    ax.set_ylabel("alpha")
    ax.set_title("Learned mixing weight alpha (FLIP joint)")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "alpha.png"), dpi=100)
    plt.close(fig)
    made.append(("Learned alpha", "alpha.png"))
  return made


def curve(out_dir: str, fname: str, title: str, ylabel: str, series,
          made: list[tuple[str, str]]) -> None:
  """One line plot ``<out_dir>/<fname>`` of ``series`` ((label, [(step,
  value)]) pairs; empty ones left out, nothing written when all are);
  appends (title, fname) to ``made``."""
  series = [(label, pts) for label, pts in series if pts]
  if not series:
    return
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 3.5))
  for label, pts in series:
    ax.plot(*zip(*pts), marker="o" if len(pts) < 30 else None, label=label)
  ax.set_xlabel("step")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, fname), dpi=100)
  plt.close(fig)
  made.append((title, fname))


def points(run_dir: str, key: str) -> list[tuple[int, float]]:
  """(step, value) of ``key`` in a run's ``metrics.jsonl``."""
  return [(r["step"], r[key]) for r in read_jsonl(
      os.path.join(run_dir, "metrics.jsonl")) if key in r]
