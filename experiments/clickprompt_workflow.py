"""ClickPrompt's workflow (``run_all --method=clickprompt``): its
``workflow.Spec``.

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

The report states the spec's claims (A11) as must / should, holds /
contradicted / not supported at N % of the official budget
(``report.verdict``) and whether the mean gain reaches ``MARGIN``.
"""
from __future__ import annotations

import functools
import os

from experiments import workflow
from experiments import workflow_report as wr
from experiments.configs import clickprompt_finetune
from experiments.configs import clickprompt_pretrain
from experiments.report_io import read_json
from experiments.workflow import Claim, Plot, Stage

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
# A gain of about 0.001 AUC counts as significant (spec A10/A11).
MARGIN = 0.001
# (better, worse, claim, must?, margin) of spec A11.
CLAIMS = (
    Claim("ctr_only", "base_id", "ClickPrompt without PLM beats the same "
          "DCNv2 from scratch (same inference cost)", True, MARGIN),
    Claim("prefix_add", "base_id", "ClickPrompt with PLM beats DCNv2 from "
          "scratch", True, MARGIN),
    Claim("prefix_add", "nlp_only", "ClickPrompt with PLM beats the PLM-only "
          "model", True, MARGIN),
    Claim("prefix_add", "add", "ClickPrompt with PLM beats add (no prompts)",
          False, MARGIN),
    Claim("prefix_add", "prefix_add_nopt", "ClickPrompt with PLM beats "
          "prefix_add without PA-MLM", False, MARGIN),
    Claim("prefix_add_nopt", "prompt_add", "layer-wise prompts beat "
          "input-layer prompts (both without PA-MLM)", False, MARGIN),
)
EXPORTS = ("ctr_only", "prefix_add")


def _base(a):
  return a.text("dataset", "ctr", "plm", "preset")


def _pretrain(a):
  return clickprompt_pretrain.get_config(_base(a))


def _finetune(mode):
  return lambda a: clickprompt_finetune.get_config(f"{_base(a)},mode={mode}")


def _pa_mlm(ctx) -> list[str]:
  """The PA-MLM run's final loss and where its LM head came from."""
  pre = read_json(os.path.join(ctx.first, "pretrain", "pretrain_done.json"))
  if not pre or "train/lm_head_fresh" not in pre:
    return []
  return [f"PA-MLM: final masked-token loss {pre['train/mlm_loss']:.3f}; "
          "LM head " + ("FRESH (the PLM checkpoint has none)"
                        if pre["train/lm_head_fresh"] else
                        "from the PLM checkpoint"), ""]


SPEC = workflow.Spec(
    name="clickprompt", title="ClickPrompt",
    presets=clickprompt_pretrain.PRESETS,
    stages=(
        Stage("prepare", "prepare", _pretrain, phase="pretrain"),
        Stage("pretrain", "pretrain", _pretrain),
        *(Stage(n, "train", _finetune(mode),
                needs="pretrain" if from_pre else None)
          for n, (mode, from_pre) in FINETUNE_STAGES.items()),
        *(Stage(f"export_{n}", "export", needs=n, select="export")
          for n in EXPORTS)),
    check_with=("pretrain", "prefix_add"), rows=ROWS, base="base_id",
    claims=CLAIMS, claims_heading="The spec's claims (A11) on this run",
    plots=(
        Plot("pa_mlm_loss.png", "PA-MLM loss", "masked-token CE",
             (("mlm_loss", "pretrain", "train/mlm_loss"),)),
        Plot("valid_auc.png", "Validation AUC during finetuning", "valid AUC",
             workflow.every_row(ROWS, "valid/auc")),
        Plot("alpha.png", "Learned alpha (weight of the CTR logit)", "alpha",
             workflow.every_row(ROWS, "train/alpha"))),
    report=(wr.results, wr.claims, _pa_mlm, wr.stages, wr.exports,
            wr.plots))

# For scripts and tests: run_all and the report of this spec.
run_all = functools.partial(workflow.run_all, SPEC)
write_report = functools.partial(wr.write, SPEC)
