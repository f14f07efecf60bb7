r"""The report writer of every method's ``experiments.workflow.Spec``.

``write(spec, workdir)`` reads only files the stages wrote, so it can be
rerun at any time:

  python -c "from experiments import flip_workflow as f; \
    print(f.write_report('runs/demo'))"

It writes ``results.md`` (the results table of ``spec.rows``),
``report.md`` / ``report.html`` (the title, the preset, then the spec's
``report`` sections in order, with the PNG plots of ``spec.plots``) and
``summary.json`` (every row per seed, the claims' verdicts and what
``spec.summary`` adds). A section is a function of a ``Report`` returning
markdown lines; the shared ones are here (``results``, ``budget``,
``claims``, ``stages``, ``exports``, ``plots``), a method's own live in its
spec.
"""
from __future__ import annotations

import dataclasses
import os

from experiments import report as report_lib
from experiments import report_plots
from experiments import stages as stages_lib
from experiments.report_io import read_json, seed_dirs


@dataclasses.dataclass(frozen=True)
class Report:
  """What a report section reads: the spec, the workdir, the table's rows
  and the claims' verdicts and lines, the first seed's folder, the plots."""
  spec: object
  workdir: str
  table: str
  rows: list
  verdicts: list      # summary.json's claims
  claim_lines: list   # their lines, in the same order
  first: str
  made: list          # (heading, PNG file) of the plots drawn


def write(spec, workdir: str, *, dataset: str = "", preset: str = "") -> str:
  """Writes ``spec``'s report files for ``workdir``; returns what run_all
  prints (the table, the claims' lines, ``spec.printed``'s lines)."""
  table, rows = report_lib.results_table(workdir, spec.rows, base=spec.base)
  decided = report_lib.decide(rows, spec.claims)
  first = seed_dirs(workdir)[0][1]
  made = [m for m in (report_plots.draw(workdir, first, p)
                      for p in spec.plots) if m]
  ctx = Report(spec, workdir, table, rows, [v for _, v in decided],
               [report_lib.claim_line(c, v) for c, v in decided], first,
               made)
  if spec.verdicts is not None:  # claims decided otherwise (a count)
    for v, line in spec.verdicts(ctx):
      ctx.verdicts.append(v)
      ctx.claim_lines.append(line)
  md = [f"# {spec.title} run report: {dataset or os.path.basename(workdir)}",
        ""]
  if preset:
    md += [f"Preset `{preset}`; selection on validation AUC, test evaluated "
           "once at the selected step.", ""]
  for section in spec.report or DEFAULT:
    md += section(ctx)
  summary = {"models": report_lib.models(rows), "claims": ctx.verdicts}
  if spec.summary is not None:
    summary.update(spec.summary(ctx))
  stages_lib.write_report_files(workdir, table=table, text="\n".join(md),
                                plots=made,
                                summary=summary)
  printed = ctx.claim_lines + (spec.printed(ctx) if spec.printed else [])
  return table + "".join("\n" + line for line in printed)


def results(ctx: Report) -> list[str]:
  return ["## Results", "", ctx.table, ""]


def budget(ctx: Report) -> list[str]:
  """Each row's share of the official budget; the rows cut off by it."""
  md = ["Budget: each row's share of the official budget "
        "(experiments/budget.py; pretraining examples and finetuning "
        "epochs against the paper code's), by row:", ""]
  md += report_lib.budget_lines(ctx.rows) + [""]
  notes = report_lib.budget_notes(ctx.rows)
  if notes:
    md += ["Stopped: `early` = early stopping on valid AUC; `budget` = "
           "the step budget ended after the best evaluation; `budget, "
           "rising` = cut off with the best at the last evaluation.", ""]
    md += notes + [""]
  return md


def claims(ctx: Report) -> list[str]:
  if not ctx.claim_lines:
    return []
  return [f"## {ctx.spec.claims_heading}", ""] + ctx.claim_lines + [""]


def stages(ctx: Report) -> list[str]:
  """The first seed's stages: device and wall time, in the spec's order."""
  done = read_json(os.path.join(ctx.first, "stages.json")) or {}
  seeds = [s for s, _ in seed_dirs(ctx.workdir) if s is not None]
  order = [s.name for s in ctx.spec.stages]
  md = ["## Stages" + (f" (seed {seeds[0]} of {len(seeds)})" if seeds
                       else ""), "", "| stage | device | wall s |",
        "|---|---|---|"]
  for name, info in sorted(done.items(), key=lambda kv: order.index(kv[0])
                           if kv[0] in order else len(order)):
    md.append(f"| {name} | {info['device']} | {info['wall_sec']:.0f} |")
  return md + [""]


def exports(ctx: Report) -> list[str]:
  """The parity check of each export stage of the first seed."""
  md = []
  for s in ctx.spec.stages:
    check = None if s.kind != "export" else read_json(
        os.path.join(ctx.first, s.dir, stages_lib.CHECK))
    if check is not None:
      md.append(f"PyTorch export of {s.label or s.needs}: max |p_torch - "
                f"p_flax| = {check['max_abs_diff']:.2e}")
  return md + [""] if md else []


def plots(ctx: Report) -> list[str]:
  return [line for t, f in ctx.made
          for line in (f"## {t}", "", f"![{t}]({f})", "")]


# The sections of a report, in order, unless a spec lays out its own.
DEFAULT = (results, claims, stages, exports, plots)
