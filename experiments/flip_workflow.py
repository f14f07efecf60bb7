"""FLIP's workflow behind ``experiments.run_all`` (the default method): its
``workflow.Spec``.

Stages: ``prepare``, ``pretrain`` (MLM + MTM + ICL), FLIP_ID / FLIP_PLM /
FLIP finetuned from it, the ID model and the PLM-only model from the public
weights, ``fusion`` (the logistic-regression bound of
``experiments.fusion``), ``export`` (the joint model to PyTorch, parity
checked); opt-in: the ablations, the joint model from public weights, the
PLM baselines and the alpha = sigmoid(θ) variant.
"""
from __future__ import annotations

import functools

from experiments import fusion
from experiments import pretrain_check
from experiments import workflow
from experiments import workflow_report as wr
from experiments.configs import ctr_bert
from experiments.configs import flip_finetune
from experiments.configs import flip_pretrain
from experiments.configs import p_tab_pretrain
from experiments.workflow import Claim, Plot, Stage

# Ablations (opt-in): each pretrains without one loss, then finetunes the
# joint model from it.
ABLATIONS = {"no_mlm": "mlm", "no_mtm": "mtm", "no_icl": "icl"}


def _base(a):
  return a.text("dataset", "ctr", "plm", "preset")


def _finetune(mode, alpha="raw"):
  return lambda a: flip_finetune.get_config(
      f"{_base(a)},mode={mode},alpha={alpha}")


def _pretrain(a):
  return flip_pretrain.get_config(_base(a))


def _fusion(name):
  return Stage(name, "custom", select="fusion", done=f"{name}/results.json",
               run=lambda ctx, folder, cfg: fusion.run_stage(folder, name))


def _ablation(abl, loss):
  sel = f"ablate_{abl}"
  return (Stage(f"pretrain_{abl}", "pretrain", _pretrain, select=sel,
                overrides=((f"pretrain:pretrain.{loss}.enabled", "false"),)),
          Stage(f"flip_joint_{abl}", "train", _finetune("joint"),
                needs=f"pretrain_{abl}", select=sel))


ROWS = (("base_id", "ID model from scratch"),
        ("base_plm", "PLM only (public weights)"),
        ("flip_id", "FLIP_ID"),
        ("flip_plm", "FLIP_PLM"),
        ("flip_joint", "FLIP (joint)"),
        ("flip_joint_sigmoid", "FLIP (joint), alpha = sigmoid(θ) at its own "
         "rate"),
        ("fusion_flip", "fusion bound: FLIP_ID + FLIP_PLM (logistic "
         "regression on valid logits)"),
        ("fusion_base", "fusion bound: ID model + PLM-only (logistic "
         "regression on valid logits)"),
        ("base_joint", "joint from public weights (no pretraining)"),
        ("ctr_bert", "CTR-BERT (two towers)"),
        ("p_tab", "P-Tab (MLM on prompts, then [CLS])"),
        ("flip_joint_no_mlm", "FLIP (joint) pretrained without MLM"),
        ("flip_joint_no_mtm", "FLIP (joint) pretrained without MTM"),
        ("flip_joint_no_icl", "FLIP (joint) pretrained without ICL"))
_J = "flip_joint"
# FLIP's headline claims (better row, worse row, the claim in words).
CLAIMS = (
    Claim(_J, "base_id", "FLIP (joint) beats the ID model from scratch"),
    Claim(_J, "base_plm", "FLIP (joint) beats the PLM-only model"),
    Claim("flip_id", "base_id", "FLIP_ID beats the ID model from scratch "
          "(same inference cost)"),
    Claim("flip_plm", "base_plm", "FLIP_PLM beats the PLM-only model"),
    Claim(_J, "ctr_bert", "FLIP (joint) beats CTR-BERT"),
    Claim(_J, "p_tab", "FLIP (joint) beats P-Tab"),
    Claim("flip_plm", "p_tab", "FLIP_PLM beats P-Tab (both PLM-only at "
          "inference)"),
    Claim("fusion_flip", "base_id", "some mix of FLIP_ID and FLIP_PLM beats "
          "the ID model (the fusion bound: is 'joint < ID' the data or the "
          "optimisation?)"),
    Claim("fusion_base", "base_id", "some mix of the ID model and PLM-only "
          "beats the ID model (fusion bound, no pretraining)"),
    Claim("flip_joint_sigmoid", "base_id", "FLIP (joint, alpha = sigmoid(θ) "
          "at its own rate) beats the ID model from scratch"),
    Claim(_J, "base_joint", "FLIP pretraining helps the joint model (beats "
          "the same model from public weights)"),
    *(Claim(_J, f"flip_joint_{a}", f"{l.upper()} helps (FLIP joint beats "
            f"pretraining without {l.upper()})") for a, l in ABLATIONS.items()),
)


def _icl(ctx) -> list[str]:
  """The pretraining runs whose ICL ended at chance."""
  notes = pretrain_check.notes(ctx.workdir)
  return ["## Pretraining", ""] + notes + [""] if notes else []


SPEC = workflow.Spec(
    name="flip", title="FLIP", presets=flip_pretrain.PRESETS,
    stages=(
        Stage("prepare", "prepare", _pretrain, phase="pretrain"),
        Stage("pretrain", "pretrain", _pretrain),
        *(Stage(n, "train", _finetune(m), needs="pretrain") for n, m in (
            ("flip_id", "id"), ("flip_plm", "plm"), ("flip_joint", "joint"))),
        *(Stage(n, "train", _finetune(m)) for n, m in (
            ("base_id", "id"), ("base_plm", "plm"), ("base_joint", "joint"))),
        Stage("flip_joint_sigmoid", "train", _finetune("joint", "sigmoid"),
              needs="pretrain"),
        _fusion("fusion_flip"), _fusion("fusion_base"),
        *(s for a, l in ABLATIONS.items() for s in _ablation(a, l)),
        Stage("ctr_bert", "train",
              lambda a: ctr_bert.get_config(_base(a))),
        Stage("p_tab_pretrain", "pretrain", select="p_tab",
              config=lambda a: p_tab_pretrain.get_config(_base(a))),
        Stage("p_tab", "train", _finetune("plm"), needs="p_tab_pretrain"),
        Stage("export", "export", needs=_J, folder="export_joint",
              label="the joint model")),
    default=("prepare", "pretrain", "flip_id", "flip_plm", _J, "base_id",
             "base_plm", "fusion", "export"),
    check_with=("pretrain", _J), rows=ROWS, base="base_id", claims=CLAIMS,
    plots=(
        Plot("pretrain_losses.png", "FLIP pretraining losses", "loss",
             tuple((k, "pretrain", f"train/{k}")
                   for k in ("mlm_loss", "mtm_loss", "icl_loss")),
             heading="Pretraining losses"),
        Plot("valid_auc.png", "Validation AUC during finetuning", "valid AUC",
             workflow.every_row(ROWS, "valid/auc"), x="examples",
             heading="Validation AUC per finetuning mode"),
        Plot("alpha.png", "Learned mixing weight alpha (FLIP joint)", "alpha",
             (("alpha", _J, "train/alpha"),), heading="Learned alpha")),
    report=(wr.results, wr.budget, wr.claims, _icl, wr.stages, wr.exports,
            wr.plots),
    printed=lambda ctx: pretrain_check.notes(ctx.workdir))

# For scripts and tests: run_all and the report of this spec.
run_all = functools.partial(workflow.run_all, SPEC)
write_report = functools.partial(wr.write, SPEC)
