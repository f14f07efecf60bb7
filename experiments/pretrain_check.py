"""What the pretraining runs of a FLIP workdir learned, stated in its report.

ICL's retrieval accuracy has a floor, chance = 1 / (global batch): a run
that ends there has learned no alignment between the ID and text views,
whatever its loss says (the loss settles at ln(batch), the value of
uniform similarities). Under the official recipe's defaults the runs of
RESULTS.md start there and stay: the ID tower's Normal(0, 1e-4) embeddings
make its output almost the same for every row, the [CLS] of templated
prompts differs little, so both projected views are nearly constant across
the batch, and with raw dot products / 0.7 the gradient of that point is a
product of two tiny spreads; dropout noise (PLM and projection heads)
swamps that signal. Cosine similarities at a lower temperature with the
pretraining's dropout off (``ALIGNING``) leave the point within the
cpu-full budget (RESULTS.md, "ICL stays at chance").
"""
from __future__ import annotations

import os
import re

from experiments.report_io import batch_size, read_jsonl, seed_dirs

# Accuracy under this many times chance counts as "at chance".
CHANCE_FACTOR = 2.0
# The run_all overrides under which ICL aligned on ML-100K (cpu-full).
ALIGNING = ("--set=pretrain:pretrain.icl.normalize=true "
            "--set=pretrain:pretrain.icl.temperature=0.1 "
            "--set=pretrain:pretrain.proj_dropout=0.0 "
            "--set=pretrain:model.plm.dropout=0.0")


def _pretrain_dirs(seed_folder: str) -> list[str]:
  if not os.path.isdir(seed_folder):
    return []
  return sorted(d for d in os.listdir(seed_folder)
                if re.fullmatch(r"pretrain(_no_\w+)?", d))


def icl_status(pre_dir: str) -> dict | None:
  """The last logged ICL accuracy of a pretraining run against chance;
  None when the run logged none (ICL disabled, not started).

  Judged on the fixed held-out batch in eval mode (``heldout/icl_*``, no
  dropout) where the run logged it; older runs only logged the training
  batches' accuracy with dropout on (``source`` says which).
  """
  metrics = read_jsonl(os.path.join(pre_dir, "metrics.jsonl"))
  held = [r for r in metrics if "heldout/icl_acc" in r]
  if held:
    last, prefix = held[-1], "heldout"
    batch = int(last.get("heldout/icl_rows") or batch_size(pre_dir))
  else:
    rows = [r for r in metrics if "train/icl_acc" in r]
    batch = batch_size(pre_dir)
    if not rows or not batch:
      return None
    last, prefix = rows[-1], "train"
  chance = 1.0 / batch
  acc = float(last[f"{prefix}/icl_acc"])
  return {"step": int(last["step"]), "icl_acc": acc,
          "icl_loss": float(last.get(f"{prefix}/icl_loss", float("nan"))),
          "batch": batch, "chance": chance,
          "source": ("a fixed held-out batch, eval mode" if held else
                     "training batches, dropout on"),
          "at_chance": acc < CHANCE_FACTOR * chance}


def notes(workdir: str) -> list[str]:
  """One line per pretraining run whose ICL ended at chance."""
  out = []
  for seed, folder in seed_dirs(workdir):
    for name in _pretrain_dirs(folder):
      s = icl_status(os.path.join(folder, name))
      if s is None or not s["at_chance"]:
        continue
      where = f"{name}" + (f" (seed {seed})" if seed is not None else "")
      out.append(
          f"- {where}: ICL at chance at its last step ({s['step']}, "
          f"{s['source']}): "
          f"accuracy {s['icl_acc']:.4f} vs chance 1/{s['batch']} = "
          f"{s['chance']:.4f}, loss {s['icl_loss']:.3f} (uniform "
          "similarities give ln(batch)); the ID and text views did not "
          f"align; they did under run_all {ALIGNING} "
          "(experiments/pretrain_check.py).")
  return out
