"""Results table, claims and summary of an ``experiments.run_all`` workdir.

Reads only files the stages wrote (``results.json``, ``stages.json``, the
runs' ``config.json``) so it can be rerun at any time. A method's spec
(``experiments.workflow.Spec``) names the rows and claims; the report
writer ``experiments.workflow_report`` lays the report out. Each claim is
decided on per-seed paired test-AUC differences (``verdict``).
"""
from __future__ import annotations

import itertools
import os

import numpy as np

from flip_jax import metrics as metrics_lib

from experiments import budget as budget_lib
from experiments.report_io import read_json, seed_dirs

METRICS = ("test/auc", "test/gauc", "test/logloss", "valid/auc",
           # The joint models' branches (their ID and text logits alone).
           "test/ctr_auc", "test/txt_auc")


def collect(workdir: str, rows_spec, base: str | None) -> list[dict]:
  """One row per trained model: its per-seed results and their mean / std.

  Args:
    workdir: the run (or its ``seed<N>/`` folders).
    rows_spec: (stage folder, row name) pairs, in table order.
    base: the stage RelaImpr is computed over (None: none).
  """
  rows = []
  for key, name in rows_spec:
    per, seeds, walls, stops, budgets = [], [], [], [], []
    for seed, folder in seed_dirs(workdir):
      res = read_json(os.path.join(folder, key, "results.json"))
      if res is None:
        continue
      stages = read_json(os.path.join(folder, "stages.json")) or {}
      per.append(res)
      seeds.append(res.get("seed", seed))
      walls.append(stages.get(key, {}).get("wall_sec"))
      stops.append(stop_reason(os.path.join(folder, key), res))
      budgets.append(budget_lib.row_budget(os.path.join(folder, key)))
      if "alpha" in res and "steps" in res:
        res = dict(res, alpha_reach=budget_lib.alpha_reach(
            os.path.join(folder, key), res["steps"]))
        per[-1] = res
    if not per:
      continue
    shares = [b["share"] if b else None for b in budgets]
    row = {"stage": key, "name": name, "seeds": seeds, "per_seed": per,
           "wall_sec": walls, "stops": stops, "budget": budgets,
           # The row's share of the official budget: its smallest over
           # seeds (None when any is unknown).
           "share": None if None in shares else min(shares)}
    for m in METRICS:
      vals = [r[m] for r in per if m in r]
      if vals:
        row[m] = {"values": vals, "mean": float(np.mean(vals)),
                  "std": float(np.std(vals, ddof=1)) if len(vals) > 1
                  else 0.0}
    rows.append(row)
  base_row = {r["stage"]: r for r in rows}.get(base) if base else None
  for r in rows:  # RelaImpr over the base row, seed by seed
    if base_row is not None and r is not base_row:
      pairs = _paired(r, base_row, "test/auc")
      vals = [metrics_lib.rela_impr(a, b) for a, b, _ in pairs if b > 0.5]
      if vals:
        r["rela_impr"] = {"values": vals, "mean": float(np.mean(vals))}
  return rows


# How a finetuning run ended (see stop_reason).
EARLY, BUDGET, RISING = "early", "budget", "budget, rising"


def stop_reason(run_dir: str, result: dict) -> str:
  """EARLY: early stopping (patience evaluations without a better valid
  AUC); RISING: its step budget ended with the best valid AUC at the last
  evaluation, so it may have been cut off while still improving; BUDGET:
  the budget ended after the best evaluation."""
  if "stopped" in result:  # a row that is fitted, not trained (fusion)
    return result["stopped"]
  tracker = read_json(os.path.join(run_dir, "early_stopping.json")) or {}
  if tracker and tracker[max(tracker, key=int)].get("done"):
    return EARLY
  return RISING if result.get("best_step") == result.get("steps") else BUDGET


def budget_notes(rows: list[dict]) -> list[str]:
  """One line per model cut off by its budget while its valid AUC rose."""
  out = []
  for r in rows:
    n = sum(s == RISING for s in r.get("stops", []))
    if n:
      out.append(f"- {r['name']}: its budget ended with the best valid AUC "
                 f"at the last evaluation on {n} of {len(r['stops'])} "
                 f"seed(s): cut off while still improving (under-trained).")
  return out


def _paired(a: dict, b: dict, metric: str
            ) -> list[tuple[float, float, int]]:
  """(a, b, seed): values of ``metric`` on the seeds both rows ran."""
  bv = dict(zip(b["seeds"], (r[metric] for r in b["per_seed"])))
  return [(r[metric], bv[s], s) for s, r in zip(a["seeds"], a["per_seed"])
          if s in bv]


def fmt(stat: dict | None, digits: int = 4) -> str:
  if stat is None:
    return ""
  if len(stat["values"]) == 1:
    return f"{stat['mean']:.{digits}f}"
  return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def results_table(workdir: str, rows_spec, base: str | None
                  ) -> tuple[str, list[dict]]:
  """Markdown table of the finetuned models (mean ± std over seeds).

  Every method's report uses it (``rows_spec`` / ``base`` as in
  ``collect``): metrics, RelaImpr over ``base``, each seed's best step and
  why it stopped (``stop_reason``), the learned alpha where there is one and
  the mean wall time of the stage.
  """
  rows = collect(workdir, rows_spec, base)
  lines = ["| model | test AUC | test gAUC | test LogLoss | RelaImpr | "
           "valid AUC | ID / text branch test AUC | best step | stopped | "
           "alpha (reach) | budget | wall s |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    per = r["per_seed"]
    alpha = "/".join(
        f"{x['alpha']:.3f}" + (f" ({x['alpha_reach']:.3g})"
                               if x.get("alpha_reach") is not None else "")
        for x in per if "alpha" in x)
    walls = [w for w in r["wall_sec"] if w is not None]
    ri = r.get("rela_impr")
    ri_s = "" if ri is None else f"{100 * ri['mean']:+.2f}%"
    branches = ("" if "test/ctr_auc" not in r else
                f"{fmt(r['test/ctr_auc'])} / {fmt(r.get('test/txt_auc'))}")
    lines.append(
        f"| {r['name']} | {fmt(r.get('test/auc'))} | "
        f"{fmt(r.get('test/gauc'))} | {fmt(r.get('test/logloss'))} | "
        f"{ri_s} | "
        f"{fmt(r.get('valid/auc'))} | {branches} | "
        f"{'/'.join(str(x['best_step']) for x in per)} | "
        f"{'/'.join(r['stops'])} | {alpha} | "
        f"{budget_lib.pct(r['share'])} | "
        f"{'' if not walls else f'{np.mean(walls):.0f}'} |")
  return "\n".join(lines), rows


def budget_lines(rows: list[dict]) -> list[str]:
  """One line per row: its share of the official budget, as measured
  (the first seed's runs; ``summary.json`` has every seed's)."""
  out = []
  for r in rows:
    b = next((b for b in r["budget"] if b), None)
    out.append(f"- {r['name']}: {budget_lib.describe(b)}"
               + ("" if b is None or "pretrain" not in b or b["pretrain"] is
                  None else f"; pretraining schedule "
                  f"{b['pretrain']['schedule']}"))
  return out


def sign_flip_p(diffs: list[float]) -> float:
  """Exact two-sided p of a paired sign-flip (randomization) test."""
  d = np.asarray(diffs, np.float64)
  observed = abs(d.mean())
  signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
  return float(np.mean(np.abs((signs * d).mean(axis=1)) >= observed - 1e-15))


HOLDS, CONTRADICTED = "holds", "contradicted"


def verdict(diffs: list[float], share: float | None) -> str:
  """The verdict's words: 'holds' (every seed positive), 'contradicted'
  (every seed negative and the rows had at least budget.FULL of the
  official budget), else 'not supported at N % of the budget'."""
  if all(d > 0 for d in diffs):
    return HOLDS
  if all(d < 0 for d in diffs) and share is not None and (
      share >= budget_lib.FULL):
    return CONTRADICTED
  if share is None:
    return "not supported (no official budget stated)"
  return f"not supported at {budget_lib.pct(share)} of the budget"


def decide(rows: list[dict], claims) -> list[tuple[tuple, dict]]:
  """(claim, verdict) of each claim (a ``workflow.Claim``) both of whose
  rows ran, decided on per-seed paired test-AUC differences and the rows'
  share of the official budget (``verdict``); a graded one (``must`` set)
  also records ``must`` and whether its mean difference reaches its
  ``margin``."""
  by = {r["stage"]: r for r in rows}
  out = []
  for c in claims:
    a, b, text = c.better, c.worse, c.text
    if a not in by or b not in by:
      continue
    pairs = _paired(by[a], by[b], "test/auc")
    if not pairs:
      continue
    # The seeds both rows ran (an ablation may run on fewer seeds).
    common = [seed for _, _, seed in pairs]
    diffs = [x - y for x, y, _ in pairs]
    mean = float(np.mean(diffs))
    positive = sum(d > 0 for d in diffs)
    shares = [by[a]["share"], by[b]["share"]]
    share = None if None in shares else min(shares)
    words = verdict(diffs, share)
    v = {"claim": text, "holds": words == HOLDS,
         "verdict": words, "budget_share": share,
         "test/auc_diffs": diffs,
         "test/auc_diff": mean, "seeds_positive": positive,
         "num_seeds": len(diffs),
         "p_sign_flip": sign_flip_p(diffs) if len(diffs) > 1 else None,
         "seeds": common,
         "subset": len(common) < max(len(by[a]["seeds"]),
                                     len(by[b]["seeds"])),
         # Means over the paired seeds (a row's mean over all its seeds
         # would not match the difference).
         "test/auc": [float(np.mean([x for x, _, _ in pairs])),
                      float(np.mean([y for _, y, _ in pairs]))]}
    if c.must is not None:
      v.update(must=c.must, margin_ok=bool(mean >= c.margin))
    out.append((c, v))
  return out


def claim_line(c, v: dict) -> str:
  """A claim's verdict in one line (a graded claim: must / should and its
  margin)."""
  graded = "must" in v
  line = ((f"- [{'must' if v['must'] else 'should'}] " if graded else "- ")
          + f"{v['claim']}: {v['verdict']} (test AUC {v['test/auc'][0]:.4f}"
          f" vs {v['test/auc'][1]:.4f}, {v['test/auc_diff']:+.4f}")
  if v["num_seeds"] > 1 and graded:
    line += (f" over {v['num_seeds']} seeds, positive on "
             f"{v['seeds_positive']}, sign-flip p = {v['p_sign_flip']:.3f}")
  elif v["num_seeds"] > 1:
    line += (f" mean over {v['num_seeds']} seeds, positive on "
             f"{v['seeds_positive']}, per seed "
             + ", ".join(f"{d:+.4f}" for d in v["test/auc_diffs"])
             + f", sign-flip p = {v['p_sign_flip']:.3f}")
  if graded:
    line += f"; margin >= {c.margin}: {'yes' if v['margin_ok'] else 'no'}"
  elif v["subset"]:
    line += (f"; on seed{'s' if len(v['seeds']) > 1 else ''} "
             + ", ".join(str(s) for s in v["seeds"]) + " only")
  return line + (f"; at {budget_lib.pct(v['budget_share'])} of the "
                 "official budget)")


def models(rows: list[dict]) -> dict:
  """One entry per trained model (keyed by the report's row name, each
  metric with its per-seed values, mean and std)."""
  out = {}
  for r in rows:
    entry = {"stage": r["stage"], "seeds": r["seeds"],
             "wall_sec": r["wall_sec"],
             "best_step": [x["best_step"] for x in r["per_seed"]],
             "stopped": r.get("stops", []),
             # Share of the official budget (the row's smallest over seeds)
             # and each seed's pretraining / finetuning budget.
             "budget_share": r.get("share"), "budget": r.get("budget", [])}
    if any("alpha" in x for x in r["per_seed"]):
      entry["alpha"] = [x.get("alpha") for x in r["per_seed"]]
      entry["alpha_reach"] = [x.get("alpha_reach") for x in r["per_seed"]]
    # Each metric's mean (scalars, for quick scripts), then per seed.
    entry.update({m: r[m]["mean"] for m in METRICS if m in r})
    entry["per_seed"] = {m: r[m] for m in METRICS + ("rela_impr",) if m in r}
    out[r["name"]] = entry
  return out
