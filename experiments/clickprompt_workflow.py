"""ClickPrompt's end-to-end workflow (``run_all --method=clickprompt``).

Stages, each in its own sub-workdir, each resumable (a finished stage is
skipped; an interrupted training stage resumes from its checkpoint), timed
in ``stages.json`` (the stage runner ``experiments.stages``):

  prepare          data preparation and statistics          <workdir>/data
  pretrain         PA-MLM                                   <workdir>/pretrain
  base_id          the full-rank DCNv2 from scratch (ctr_only, no PA-MLM)
  nlp_only         the PLM alone (public weights)
  add              DCNv2 + PLM logits, no prompts ("w/o Prompt")
  prompt_add       input-layer prompts, no PA-MLM
  prefix_add_nopt  layer-wise prompts without PA-MLM ("w/o Pretrain")
  ctr_only         ClickPrompt without the PLM (from PA-MLM)
  prefix_add       ClickPrompt with the PLM (from PA-MLM)
  export           ctr_only and prefix_add to PyTorch with the parity check
                   (export_ctr_only/ and export_prefix_add/, each check.json)

Then ``results.md``, ``report.md`` / ``report.html`` (plots) and
``summary.json`` with the spec's claims (A11) as holds / contradicted /
not supported at N % of the official budget (``report.verdict``)
(``experiments.report``: with several seeds, in ``seed<N>/`` folders, mean
± std and per-seed paired verdicts).
Overrides: ``key=value`` for every stage whose config has the section,
``pretrain:key`` / ``finetune:key`` for one phase (``stages.stage_overrides``).
"""
from __future__ import annotations

import os

from experiments import budget
from experiments import report
from experiments import report_plots
from experiments import run_identity
from experiments import stages as stages_lib
from experiments.configs import clickprompt_pretrain

# The presets the method has (run_all's --preset).
PRESETS = clickprompt_pretrain.PRESETS
STAGES = ("prepare", "pretrain", "base_id", "nlp_only", "add", "prompt_add",
          "prefix_add_nopt", "ctr_only", "prefix_add", "export")
# stage -> (finetuning mode, from the PA-MLM run?)
FINETUNE_STAGES = {
    "base_id": ("ctr_only", False), "nlp_only": ("nlp_only", False),
    "add": ("add", False), "prompt_add": ("prompt_add", False),
    "prefix_add_nopt": ("prefix_add", False),
    "ctr_only": ("ctr_only", True), "prefix_add": ("prefix_add", True),
}
ROWS = (("base_id", "DCNv2 (full-rank) from scratch"),
        ("nlp_only", "PLM only (nlp_only)"),
        ("add", "DCNv2 + PLM, no prompts (add)"),
        ("prompt_add", "input-layer prompts, no PA-MLM (prompt_add)"),
        ("prefix_add_nopt", "ClickPrompt without PA-MLM"),
        ("ctr_only", "ClickPrompt w/o PLM (ctr_only)"),
        ("prefix_add", "ClickPrompt with PLM (prefix_add)"))
# (better, worse, claim, must?) of spec A11.
CLAIMS = (
    ("ctr_only", "base_id", "ClickPrompt without PLM beats the same DCNv2 "
     "from scratch (same inference cost)", True),
    ("prefix_add", "base_id", "ClickPrompt with PLM beats DCNv2 from scratch",
     True),
    ("prefix_add", "nlp_only", "ClickPrompt with PLM beats the PLM-only model",
     True),
    ("prefix_add", "add", "ClickPrompt with PLM beats add (no prompts)",
     False),
    ("prefix_add", "prefix_add_nopt", "ClickPrompt with PLM beats prefix_add "
     "without PA-MLM", False),
    ("prefix_add_nopt", "prompt_add", "layer-wise prompts beat input-layer "
     "prompts (both without PA-MLM)", False),
)
# A gain of about 0.001 AUC counts as significant (spec A10/A11).
MARGIN = 0.001
EXPORTS = ("ctr_only", "prefix_add")


def _arg(dataset, ctr, plm, preset):
  return f"dataset={dataset},ctr={ctr},plm={plm},preset={preset}"


def pretrain_config(dataset, data_dir, cache_dir, ctr, plm, preset, seed,
                    overrides):
  from experiments.configs import clickprompt_pretrain  # pylint: disable=g-import-not-at-top
  cfg = clickprompt_pretrain.get_config(_arg(dataset, ctr, plm, preset))
  return stages_lib.stage_config(cfg, "pretrain", data_dir=data_dir,
                                 cache_dir=cache_dir, seed=seed,
                                 overrides=overrides)


def finetune_config(dataset, data_dir, cache_dir, ctr, plm, preset, seed,
                    mode, init_from, overrides):
  from experiments.configs import clickprompt_finetune  # pylint: disable=g-import-not-at-top
  cfg = clickprompt_finetune.get_config(_arg(dataset, ctr, plm, preset)
                                        + f",mode={mode}")
  cfg.ckpt.init_from = init_from
  return stages_lib.stage_config(cfg, "finetune", data_dir=data_dir,
                                 cache_dir=cache_dir, seed=seed,
                                 overrides=overrides)


def run_all(*, dataset: str, data_dir: str, workdir: str, preset: str,
            plm: str, ctr: str, seed: int, stages=None,
            overrides: dict[str, str] | None = None,
            seeds: list[int] | None = None) -> str:
  """Runs the selected stages; returns the printed results table.

  With several ``seeds`` every model is trained once per seed, each seed's
  stages in ``<workdir>/seed<N>/`` (data prepared once).
  """
  overrides = overrides or {}
  stages, seeds = stages_lib.run_args(stages, STAGES, STAGES, seeds, seed)
  os.makedirs(workdir, exist_ok=True)
  args = (dataset, data_dir, "", ctr, plm, preset, seeds[0])
  stages_lib.check_overrides(overrides, [
      pretrain_config(*args, {}),
      finetune_config(*args, "prefix_add", "", {})])
  run_identity.claim(workdir, "clickprompt", locals())  # before any stage
  cache_dir = os.path.join(workdir, ".flip_jax_cache")
  if "prepare" in stages:
    cfg = pretrain_config(dataset, data_dir, cache_dir, ctr, plm, preset,
                          seeds[0], overrides)
    stages_lib.prepare(workdir, cfg)
  for s, folder in stages_lib.seed_folders(workdir, seeds):
    _run_seed(folder, stages, (dataset, data_dir, cache_dir, ctr, plm, preset,
                               s), overrides)
  return write_report(workdir, dataset=dataset, preset=preset)


def _run_seed(folder, stages, args, overrides) -> None:
  """The training and export stages of one seed in ``folder``."""
  os.makedirs(folder, exist_ok=True)
  log = stages_lib.StageLog(folder)
  pre_dir = os.path.join(folder, "pretrain")
  if "pretrain" in stages:
    stages_lib.pretrain(log, "pretrain", pretrain_config(*args, overrides),
                        pre_dir)
  for name, (mode, from_pre) in FINETUNE_STAGES.items():
    if name in stages:
      stages_lib.train(log, name, finetune_config(
          *args, mode, pre_dir if from_pre else "", overrides),
                       os.path.join(folder, name))
  if "export" in stages:
    for name in EXPORTS:
      stages_lib.export(log, f"export_{name}", os.path.join(folder, name),
                        os.path.join(folder, f"export_{name}"))


# ------------------------------------------------------------------ report
def claim_verdicts(rows: list[dict]) -> list[dict]:
  """``report.claim_verdicts`` of the A11 claims, each marked must / should
  and whether its mean margin reaches ``MARGIN``."""
  must = {text: m for _, _, text, m in CLAIMS}
  out = report.claim_verdicts(rows, [c[:3] for c in CLAIMS])
  for v in out:
    v.update(must=must[v["claim"]], margin_ok=bool(
        v["test/auc_diff"] >= MARGIN))
  return out


def claim_lines(verdicts: list[dict]) -> list[str]:
  return [f"- [{'must' if v['must'] else 'should'}] {v['claim']}: "
          f"{v['verdict']} (test AUC {v['test/auc'][0]:.4f} vs "
          f"{v['test/auc'][1]:.4f}, {v['test/auc_diff']:+.4f}"
          + (f" over {v['num_seeds']} seeds, positive on "
             f"{v['seeds_positive']}, sign-flip p = {v['p_sign_flip']:.3f}"
             if v["num_seeds"] > 1 else "")
          + f"; margin >= {MARGIN}: {'yes' if v['margin_ok'] else 'no'}"
          + f"; at {budget.pct(v['budget_share'])} of the official budget)"
          for v in verdicts]


def plots(workdir: str) -> list[tuple[str, str]]:
  """PA-MLM loss, valid AUC per stage, alpha (of the first seed): (title,
  PNG file) pairs."""
  first, made = report.seed_dirs(workdir)[0][1], []
  pts = report_plots.points
  report_plots.curve(workdir, "pa_mlm_loss.png", "PA-MLM loss",
                     "masked-token CE", [("mlm_loss", pts(
                         os.path.join(first, "pretrain"), "train/mlm_loss"))],
                     made)
  report_plots.curve(workdir, "valid_auc.png",
                     "Validation AUC during finetuning", "valid AUC",
                     [(name, pts(os.path.join(first, key), "valid/auc"))
                      for key, name in ROWS], made)
  report_plots.curve(workdir, "alpha.png",
                     "Learned alpha (weight of the CTR logit)", "alpha",
                     [(name, pts(os.path.join(first, key), "train/alpha"))
                      for key, name in ROWS], made)
  return made


def write_report(workdir: str, *, dataset: str = "", preset: str = "") -> str:
  """results.md, report.md / .html and summary.json; returns the table."""
  table, rows = report.results_table(workdir, ROWS, base="base_id")
  verdicts = claim_verdicts(rows)
  first = report.seed_dirs(workdir)[0][1]
  stages = report.read_json(os.path.join(first, "stages.json")) or {}
  made = plots(workdir)
  md = [f"# ClickPrompt run report: {dataset or os.path.basename(workdir)}",
        "", f"Preset `{preset}`; selection on validation AUC, test evaluated "
        "once at the selected step.", "", "## Results", "", table, ""]
  if verdicts:
    md += ["## The spec's claims (A11) on this run", ""]
    md += claim_lines(verdicts) + [""]
  pre = report.read_json(os.path.join(first, "pretrain",
                                      "pretrain_done.json"))
  if pre and "train/lm_head_fresh" in pre:
    md += [f"PA-MLM: final masked-token loss {pre['train/mlm_loss']:.3f}; "
           "LM head " + ("FRESH (the PLM checkpoint has none)"
                         if pre["train/lm_head_fresh"] else
                         "from the PLM checkpoint"), ""]
  md += ["## Stages", "", "| stage | device | wall s |", "|---|---|---|"]
  order = [s for s in STAGES if s != "export"] + [f"export_{n}"
                                                   for n in EXPORTS]
  md += [f"| {k} | {stages[k]['device']} | {stages[k]['wall_sec']:.0f} |"
         for k in sorted(stages, key=lambda k: order.index(k)
                         if k in order else len(order))] + [""]
  for name in EXPORTS:
    check = report.read_json(os.path.join(first, f"export_{name}",
                                          "check.json"))
    if check is not None:
      md.append(f"PyTorch export of {name}: max |p_torch - p_flax| = "
                f"{check['max_abs_diff']:.2e}")
  for title, fname in made:
    md += ["", f"## {title}", "", f"![{title}]({fname})"]
  text = "\n".join(md) + "\n"
  summary = dict(report.summary(workdir, rows, [c[:3] for c in CLAIMS]),
                 claims=verdicts)
  stages_lib.write_report_files(workdir, table=table, text=text, plots=made,
                                summary=summary)
  return table + ("\n" + "\n".join(claim_lines(verdicts)) if verdicts else "")
