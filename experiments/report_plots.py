"""The PNG plots of an ``experiments.run_all`` workdir's report, drawn from
a spec's ``workflow.Plot`` declarations."""
from __future__ import annotations

import os

from experiments.report_io import batch_size, read_jsonl


def draw(out_dir: str, run_dir: str, plot) -> tuple[str, str] | None:
  """Draws ``plot`` (a ``workflow.Plot``) from the stage folders under
  ``run_dir`` (the first seed's) into ``<out_dir>/<plot.file>``; returns
  (report heading, file), or None when no series has a point.

  With ``plot.x == "examples"`` curves are drawn against training examples
  seen (the models' batches differ, 32 to 1,024), not steps, on a log scale.
  """
  series, records = [], {}  # each stage's metrics.jsonl read once
  for label, stage, key in plot.series:
    folder = os.path.join(run_dir, stage)
    if stage not in records:
      records[stage] = read_jsonl(os.path.join(folder, "metrics.jsonl"))
    scale = (batch_size(folder) or 1) if plot.x == "examples" else 1
    series.append((label, [(r["step"] * scale, r[key])
                           for r in records[stage] if key in r]))
  drawn = curve(os.path.join(out_dir, plot.file), plot.title, plot.ylabel,
                series, xlabel="training examples" if plot.x == "examples"
                else "step", logx=plot.x == "examples")
  return (plot.heading or plot.title, plot.file) if drawn else None


def curve(path: str, title: str, ylabel: str, series, *,
          xlabel: str = "step", logx: bool = False) -> bool:
  """One line plot (a PNG at ``path``) of ``series`` ((label, [(x, value)])
  pairs; empty ones left out, nothing written when all are); whether it
  was written."""
  series = [(label, pts) for label, pts in series if pts]
  if not series:
    return False
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 3.5))
  for label, pts in series:
    ax.plot(*zip(*pts), marker="o" if len(pts) < 30 else None, label=label)
  ax.set_xlabel(xlabel)
  if logx:
    ax.set_xscale("log")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return True

