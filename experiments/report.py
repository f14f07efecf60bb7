"""Results table, plots and the report of an ``experiments.run_all`` workdir.

Reads only files the stages wrote (``results.json``, ``metrics.jsonl``,
``stages.json``, ``export_joint/check.json``) so it can be rerun at any time:

  python -c "from experiments import report; print(report.write_report('runs/demo'))"

Writes ``results.md``, ``report.md`` / ``report.html`` (with PNG plots) and
``summary.json`` (the table and the claims' verdicts, for scripts).
"""
from __future__ import annotations

import html
import json
import os

from flip_jax import jsonio

ROWS = (("base_id", "ID model from scratch"),
        ("base_plm", "PLM only (public weights)"),
        ("flip_id", "FLIP_ID"),
        ("flip_plm", "FLIP_PLM"),
        ("flip_joint", "FLIP (joint)"))


def _read_json(path):
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _read_jsonl(path):
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def results_table(workdir: str) -> tuple[str, list[dict]]:
  """Markdown table of the finetuning stages (test AUC / LogLoss)."""
  stages = _read_json(os.path.join(workdir, "stages.json")) or {}
  rows, lines = [], []
  lines.append("| model | test AUC | test LogLoss | valid AUC | best step "
               "| alpha | wall s |")
  lines.append("|---|---|---|---|---|---|---|")
  for key, name in ROWS:
    res = _read_json(os.path.join(workdir, key, "results.json"))
    if res is None:
      continue
    res = dict(res, stage=key, name=name)
    rows.append(res)
    alpha = f"{res['alpha']:.3f}" if "alpha" in res else ""
    wall = stages.get(key, {}).get("wall_sec")
    lines.append(
        f"| {name} | {res['test/auc']:.4f} | {res['test/logloss']:.4f} | "
        f"{res['valid/auc']:.4f} | {res['best_step']} | {alpha} | "
        f"{'' if wall is None else f'{wall:.0f}'} |")
  return "\n".join(lines), rows


# (better row, worse row, the claim in words): FLIP's headline claims.
CLAIMS = (
    ("flip_joint", "base_id", "FLIP (joint) beats the ID model from scratch"),
    ("flip_joint", "base_plm", "FLIP (joint) beats the PLM-only model"),
    ("flip_id", "base_id", "FLIP_ID beats the ID model from scratch (same "
     "inference cost)"),
    ("flip_plm", "base_plm", "FLIP_PLM beats the PLM-only model"),
)


def claim_verdicts(rows: list[dict]) -> list[dict]:
  """Each claim both of whose rows ran: test AUCs, difference, verdict."""
  by = {r["stage"]: r for r in rows}
  out = []
  for a, b, text in CLAIMS:
    if a in by and b in by:
      da = by[a]["test/auc"] - by[b]["test/auc"]
      out.append({"claim": text, "holds": bool(da > 0),
                  "test/auc": [by[a]["test/auc"], by[b]["test/auc"]],
                  "test/auc_diff": da})
  return out


def claims(rows: list[dict]) -> list[str]:
  """The paper's claims, checked on these numbers (stated plainly)."""
  return [f"- {c['claim']}: {'holds' if c['holds'] else 'does NOT hold'} "
          f"(test AUC {c['test/auc'][0]:.4f} vs {c['test/auc'][1]:.4f}, "
          f"{c['test/auc_diff']:+.4f})" for c in claim_verdicts(rows)]


def summary(workdir: str, rows: list[dict]) -> dict:
  """``summary.json``: one entry per trained model (keyed by the report's
  row name) and the claims with their verdicts, for scripts."""
  stages = _read_json(os.path.join(workdir, "stages.json")) or {}
  models = {}
  for r in rows:
    entry = {k: r[k] for k in ("test/auc", "test/logloss", "valid/auc",
                               "valid/logloss", "best_step", "alpha")
             if k in r}
    entry["stage"] = r["stage"]
    entry["wall_sec"] = stages.get(r["stage"], {}).get("wall_sec")
    models[r["name"]] = entry
  return {"models": models, "claims": [{"claim": c["claim"],
                                        "holds": c["holds"],
                                        "test/auc_diff": c["test/auc_diff"]}
                                       for c in claim_verdicts(rows)]}


def plots(workdir: str) -> list[tuple[str, str]]:
  """Writes the PNG plots; returns (title, file name) pairs."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  made = []
  pre = _read_jsonl(os.path.join(workdir, "pretrain", "metrics.jsonl"))
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
    fig.savefig(os.path.join(workdir, "pretrain_losses.png"), dpi=100)
    plt.close(fig)
    made.append(("Pretraining losses", "pretrain_losses.png"))
  fig, ax = plt.subplots(figsize=(6, 3.5))
  any_auc = False
  for key, name in ROWS:
    recs = _read_jsonl(os.path.join(workdir, key, "metrics.jsonl"))
    pts = [(r["step"], r["valid/auc"]) for r in recs if "valid/auc" in r]
    if pts:
      any_auc = True
      ax.plot(*zip(*pts), marker="o", label=name)
  if any_auc:
    ax.set_xlabel("finetuning step")
    ax.set_ylabel("valid AUC")
    ax.set_title("Validation AUC during finetuning")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "valid_auc.png"), dpi=100)
    made.append(("Validation AUC per finetuning mode", "valid_auc.png"))
  plt.close(fig)
  recs = _read_jsonl(os.path.join(workdir, "flip_joint", "metrics.jsonl"))
  pts = [(r["step"], r["train/alpha"]) for r in recs if "train/alpha" in r]
  if pts:
    fig, ax = plt.subplots(figsize=(6, 3.0))
    ax.plot(*zip(*pts))
    ax.set_xlabel("finetuning step")
    ax.set_ylabel("alpha")
    ax.set_title("Learned mixing weight alpha (FLIP joint)")
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "alpha.png"), dpi=100)
    plt.close(fig)
    made.append(("Learned alpha", "alpha.png"))
  return made


def write_report(workdir: str, *, dataset: str = "", preset: str = "") -> str:
  """Writes results.md, report.md and report.html; returns the table."""
  table, rows = results_table(workdir)
  stages = _read_json(os.path.join(workdir, "stages.json")) or {}
  check = _read_json(os.path.join(workdir, "export_joint", "check.json"))
  made = plots(workdir)
  md = [f"# FLIP run report: {dataset or os.path.basename(workdir)}", ""]
  if preset:
    md.append(f"Preset `{preset}`; selection on validation AUC, test "
              "evaluated once at the selected step.\n")
  md += ["## Results", "", table, ""]
  cl = claims(rows)
  if cl:
    md += ["## The paper's claims on this run", ""] + cl + [""]
  md += ["## Stages", "", "| stage | device | wall s |", "|---|---|---|"]
  order = ("prepare", "pretrain", "flip_id", "flip_plm", "flip_joint",
           "base_id", "base_plm", "export")
  for name, info in sorted(stages.items(),
                           key=lambda kv: order.index(kv[0])
                           if kv[0] in order else len(order)):
    md.append(f"| {name} | {info['device']} | {info['wall_sec']:.0f} |")
  md.append("")
  if check is not None:
    md += [f"PyTorch export of the joint model: max |p_torch - p_flax| = "
           f"{check['max_abs_diff']:.2e}", ""]
  for title, fname in made:
    md += [f"## {title}", "", f"![{title}]({fname})", ""]
  text = "\n".join(md)
  jsonio.write_json_atomic(os.path.join(workdir, "summary.json"),
                           summary(workdir, rows))
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(table + "\n")
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write(text)
  body = "".join(f"<h2>{html.escape(t)}</h2><img src='{f}'>" for t, f in made)
  with open(os.path.join(workdir, "report.html"), "w") as f:
    f.write(f"<html><body><pre>{html.escape(text)}</pre>{body}</body></html>")
  return table + ("\n" + "\n".join(cl) if cl else "")

