"""Each run's share of the official budget (``experiments.configs.official``).

A verdict measured at 1 % of the paper's budget says "no effect at 1 %",
not "refuted"; so every results row, ``summary.json`` entry and claim
carries the share of the official budget its runs had:

* pretraining: examples seen (steps x batch) over the official epochs' worth
  (30 epochs of the pretraining rows for FLIP);
* finetuning: 1.0 when the run stopped early under the official patience
  (at least the official patience in epochs: it ran to the paper's
  stopping rule), else its epochs over the official epochs (capped at 1);
* a row finetuned from a pretraining run: the smaller of the two.

Reads only run files (``config.json`` upgraded, ``schedule.json`` written by
the loop, ``results.json``, ``early_stopping.json``, ``metrics.jsonl``); runs
written before ``schedule.json`` existed are reconstructed from the config
and the workdir's ``data/stats.json``.
"""
from __future__ import annotations

import math
import os
import re

import ml_collections

from experiments.configs import official
from experiments.report_io import read_json, read_jsonl
from flip_jax.train import config_compat
from flip_jax.train import run_files

# A share at or above this is "the official budget" for a contradiction.
FULL = 0.9


def pct(share: float | None) -> str:
  """'0.83 %', '4.2 %', '25 %', '100 %' ('?' when unknown)."""
  if share is None:
    return "?"
  p = 100.0 * share
  return (f"{p:.0f} %" if p >= 10 else f"{p:.1f} %" if p >= 1
          else f"{p:.2g} %")


def _stats(run_dir: str) -> dict:
  """The ``data/stats.json`` of the run_all workdir above ``run_dir``."""
  d = os.path.abspath(run_dir)
  for _ in range(3):
    d = os.path.dirname(d)
    s = read_json(os.path.join(d, "data", "stats.json"))
    if s is not None:
      return s
  return {}


def schedule(run_dir: str, cfg: dict) -> dict | None:
  """The loop's ``schedule.json``, or the same reconstructed for an older
  run (FLIP-style pretraining reads train + valid rows, finetuning train)."""
  sched = read_json(os.path.join(run_dir, "schedule.json"))
  if sched is not None:
    return sched
  stats = _stats(run_dir)
  if "train_rows" not in stats:
    return None
  rows = stats["train_rows"] + (stats.get("valid_rows", 0)
                                if cfg["task"].endswith("pretrain") else 0)
  return run_files.schedule(ml_collections.ConfigDict(cfg), rows)


def _steps(run_dir: str) -> int | None:
  res = read_json(os.path.join(run_dir, "results.json"))
  if res is not None and "steps" in res:
    return int(res["steps"])
  rows = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
  return int(rows[-1]["step"]) if rows else None


def _stopped_early(run_dir: str) -> bool:
  tracker = read_json(os.path.join(run_dir, "early_stopping.json")) or {}
  return bool(tracker) and bool(tracker[max(tracker, key=int)].get("done"))


def schedule_note(cfg: dict, off: dict | None, epochs_run: float = 0.0
                  ) -> str:
  """How the run's learning-rate schedule relates to the official one:
  'official', 'compressed (cosine over N epochs)' or the schedule's name.
  A per-epoch cosine is constant within its first epoch, so a run that
  ended there followed the official curve whatever its horizon."""
  s = cfg.get("optim", {}).get("schedule", {})
  name = s.get("name", "constant")
  if off is None or name == "constant":
    return name
  if name == "cosine_epoch":
    if s.get("epochs") == off["epochs"]:
      return "official"
    if epochs_run <= 1.0:
      return "official (its first epoch: constant)"
    return f"compressed (cosine over {s.get('epochs')} epochs)"
  return f"{name} over the run's steps (not the official per-epoch cosine)"


def run_budget(run_dir: str) -> dict | None:
  """The run's budget against the official one; None without a config."""
  raw = read_json(os.path.join(run_dir, "config.json"))
  if raw is None:
    return None
  cfg = config_compat.upgrade(raw)
  mode = cfg.get("finetune", {}).get("mode")
  off = official.budget(cfg["task"], mode)
  sched, steps = schedule(run_dir, cfg), _steps(run_dir)
  if sched is None or steps is None:
    return None
  rows, batch = sched["train_rows"], sched["batch_size"]
  epochs = steps * batch / rows
  out = {"task": cfg["task"], "steps": steps, "batch_size": batch,
         "epochs": epochs, "schedule": schedule_note(cfg, off, epochs)}
  if off is None:
    return {**out, "share": None}
  out.update(official_epochs=off["epochs"],
             official_steps=off["epochs"] * math.ceil(rows / off["batch_size"]))
  share = min(1.0, epochs / off["epochs"])
  if off["patience_epochs"] is not None:
    # In epochs of the run's own steps (drop-remainder batches).
    patience = (sched["patience_evals"] * sched["eval_every"]
                / sched["steps_per_epoch"])
    out["patience_epochs"] = patience
    out["stopped_early"] = _stopped_early(run_dir)
    if out["stopped_early"] and patience >= off["patience_epochs"] - 1e-9:
      share = 1.0
  out["share"] = share
  return out


def init_from(run_dir: str) -> str:
  """The run's ``ckpt.init_from`` (a pretraining workdir) or ''."""
  raw = read_json(os.path.join(run_dir, "config.json")) or {}
  return raw.get("ckpt", {}).get("init_from", "") or ""


def row_budget(run_dir: str) -> dict | None:
  """A results row's budget: its finetuning and, when it was initialised
  from a pretraining run, that run's; ``share`` the smaller (None when
  either is unknown)."""
  res = read_json(os.path.join(run_dir, "results.json")) or {}
  if "inputs" in res:  # a row fitted on other runs (fusion): theirs
    parts = [row_budget(d) for d in res["inputs"]]
    if None in parts:
      return None
    shares = [p["share"] for p in parts]
    return {**parts[0], "inputs": parts,
            "share": None if None in shares else min(shares)}
  ft = run_budget(run_dir)
  if ft is None:
    return None
  out = {"finetune": ft, "share": ft["share"]}
  pre_dir = init_from(run_dir)
  if pre_dir:
    pre = run_budget(pre_dir)
    out["pretrain"] = pre
    out["share"] = (None if pre is None or pre["share"] is None
                    or ft["share"] is None else min(ft["share"], pre["share"]))
  return out


def describe(b: dict | None) -> str:
  """'pretrain 0.83 % (350 of 2,640 steps) · finetune 100 % (early)'."""
  if b is None:
    return "?"
  if "inputs" in b:
    return "the smaller of its inputs': " + "; ".join(
        describe(p) for p in b["inputs"])
  parts = []
  pre = b.get("pretrain")
  if pre is not None:
    steps = (f"{pre['steps']:,} steps of {pre['batch_size']}"
             + (f" vs {pre['official_steps']:,} of "
                f"{official.FLIP_PRETRAIN['batch_size']}"
                if "official_steps" in pre else ""))
    parts.append(f"pretrain {pct(pre['share'])} ({steps})")
  ft = b["finetune"]
  how = ("stopped early" if ft.get("stopped_early") else
         f"{ft['epochs']:.2g} of {ft['official_epochs']} epochs"
         if "official_epochs" in ft else f"{ft['epochs']:.2g} epochs")
  parts.append(f"finetune {pct(ft['share'])} ({how})")
  return " · ".join(parts)


def alpha_reach(run_dir: str, steps: int) -> float | None:
  """How far the joint model's alpha can move: its learning rate x steps
  (Adam's step is at most about lr); None for a run without alpha."""
  raw = read_json(os.path.join(run_dir, "config.json"))
  if raw is None:
    return None
  optim = config_compat.upgrade(raw).get("optim", {})
  lr = optim.get("lr")
  for group in optim.get("param_groups", []):  # (regex, lr[, name])
    if re.search(group[0], "alpha"):
      lr = group[1]
      break
  return None if lr is None else float(lr) * steps
