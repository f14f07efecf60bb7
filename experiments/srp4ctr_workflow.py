"""SRP4CTR's workflow (``run_all --method=srp4ctr``): its ``workflow.Spec``.

  prepare         data + sequence statistics, the samples parquet  data/
  pretrain        FG-BERT on the train histories                  pretrain/
  pretrain_id     ID-only BERT4Rec-style pretraining              pretrain_id/
  backbone        the CTR backbone without sequence knowledge     backbone/
  din             DIN's target attention over the raw history     din/
  srp4ctr         SRP4CTR, FG-BERT finetuned                      srp4ctr/
  srp4ctr_frozen  SRP4CTR, FG-BERT frozen                         srp4ctr_frozen/
  no_cross        without the uni cross-attention                 no_cross/
  no_queries      without the querying transformer                no_queries/
  bert4rec        SRP4CTR on the ID-only pretraining              bert4rec/
  flops           FLOPs per candidate and candidates/s (once)     flops.json
  export          SRP4CTR to PyTorch, parity checked              export_srp4ctr/

The report states spec B8's claims as holds / contradicted / not supported
at N % of the official budget (``report.verdict``) and the FLOPs verdict
(``srp4ctr_stages.flops_verdict``), with the stages' data and FLOPs code.
"""
from __future__ import annotations

import functools
import os

from experiments import srp4ctr_stages
from experiments import workflow
from experiments import workflow_report as wr
from experiments.configs import srp4ctr_common
from experiments.configs import srp4ctr_ctr
from experiments.configs import srp4ctr_pretrain
from experiments.report_io import read_json
from experiments.workflow import Claim, Plot, Stage

# Pretraining stages: their token attributes ('fg' or 'id').
PRETRAIN_STAGES = {"pretrain": "fg", "pretrain_id": "id"}
# CTR stages: (config variant, frozen encoder, pretraining stage or None).
CTR_STAGES = {
    "backbone": ("backbone", False, None), "din": ("din", False, None),
    "srp4ctr": ("srp4ctr", False, "pretrain"),
    "srp4ctr_frozen": ("srp4ctr", True, "pretrain"),
    "no_cross": ("no_cross", False, "pretrain"),
    "no_queries": ("no_queries", False, "pretrain"),
    "bert4rec": ("srp4ctr", False, "pretrain_id"),
}
ROWS = (("backbone", "Backbone alone (no sequence)"),
        ("din", "DIN (target attention)"),
        ("srp4ctr", "SRP4CTR (FG-BERT finetuned)"),
        ("srp4ctr_frozen", "SRP4CTR (FG-BERT frozen)"),
        ("no_cross", "SRP4CTR without cross-attention"),
        ("no_queries", "SRP4CTR without queries"),
        ("bert4rec", "SRP4CTR on ID-only BERT4Rec pretraining"))
# Spec B8 (and B5's DIN comparison): (better row, worse row, claim).
CLAIMS = (
    Claim("srp4ctr", "backbone", "SRP4CTR beats the same backbone without "
          "sequence knowledge (B8, must)"),
    Claim("srp4ctr", "din", "SRP4CTR beats DIN (B5)"),
    Claim("srp4ctr", "bert4rec", "FG-BERT beats ID-only BERT pretraining "
          "(B8)"),
    Claim("srp4ctr", "no_cross", "the uni cross-attention helps on its own "
          "(B8)"),
    Claim("srp4ctr", "no_queries", "the querying transformer helps on its "
          "own (B8)"),
)


def _pretrain(attributes):
  return lambda a: srp4ctr_pretrain.get_config(
      f"{a.text('dataset', 'preset')},attributes={attributes}")


def _ctr(variant, freeze):
  return lambda a: srp4ctr_ctr.get_config(
      f"{a.text('dataset', 'preset', 'ctr')},variant={variant},"
      f"freeze={freeze}")


def _flops(ctx, workdir, cfg):
  del cfg
  configs = {k: ctx.config(k, ctx.seeds[0])
             for k in ("srp4ctr", "din", "backbone")}
  return srp4ctr_stages.flops(workdir, os.path.join(workdir, "flops.json"),
                              configs)


def _flops_of(ctx):
  return read_json(os.path.join(ctx.workdir, "flops.json"))


def _flops_claim(ctx) -> list[tuple[dict, str]]:
  fv = srp4ctr_stages.flops_verdict(_flops_of(ctx))
  return [] if fv is None else [(fv, srp4ctr_stages.verdict_line(fv))]


SPEC = workflow.Spec(
    name="srp4ctr", title="SRP4CTR", presets=srp4ctr_common.PRESETS,
    stages=(
        Stage("prepare", "prepare", _ctr("srp4ctr", False),
              done="data/sequences.json",
              run=lambda ctx, folder, cfg: srp4ctr_stages.prepare(folder,
                                                                  cfg)),
        *(Stage(n, "pretrain", _pretrain(attributes))
          for n, attributes in PRETRAIN_STAGES.items()),
        *(Stage(n, "train", _ctr(variant, freeze), needs=pre,
                needs_key="srp4ctr.pretrained")
          for n, (variant, freeze, pre) in CTR_STAGES.items()),
        Stage("flops", "run", run=_flops, done="flops.json"),
        Stage("export", "export", needs="srp4ctr", folder="export_srp4ctr",
              label="SRP4CTR")),
    check_with=("pretrain", "srp4ctr"), rows=ROWS, base="backbone",
    claims=CLAIMS, uses_plm=False,
    plots=(
        Plot("pretrain_losses.png", "FG-BERT pretraining losses", "loss",
             tuple((k, "pretrain", k)
                   for k in ("train/loss", "train/item_loss"))),
        Plot("valid_auc.png", "Validation AUC per model", "valid AUC",
             workflow.every_row(ROWS, "valid/auc"))),
    report=(wr.results, wr.claims,
            lambda ctx: srp4ctr_stages.flops_table(_flops_of(ctx)),
            wr.exports, wr.plots),
    verdicts=_flops_claim, summary=lambda ctx: {"flops": _flops_of(ctx)})

# For scripts and tests: run_all and the report of this spec.
run_all = functools.partial(workflow.run_all, SPEC)
write_report = functools.partial(wr.write, SPEC)
