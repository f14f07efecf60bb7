"""ClickPrompt finetuning for CTR (CLICKPROMPT_SRP4CTR.md A7).

  # with the PLM, from a PA-MLM run (the method):
  python -m experiments.train --workdir runs/cp_prefix_add \
    --config experiments/configs/clickprompt_finetune.py:dataset=synthetic,mode=prefix_add \
    --config.ckpt.init_from runs/cp_pre_syn

  # without the PLM (the plain DCNv2's inference cost), from the PA-MLM run:
  python -m experiments.train --workdir runs/cp_ctr_only \
    --config experiments/configs/clickprompt_finetune.py:dataset=synthetic,mode=ctr_only \
    --config.ckpt.init_from runs/cp_pre_syn

  # baselines, no init_from: the same full-rank DCNv2 from scratch
  # (mode=ctr_only), the PLM alone (nlp_only), both without prompts (add),
  # prompts without PA-MLM (prefix_add), input-layer prompts (prompt_add):
  python -m experiments.train --workdir runs/cp_base_id \
    --config experiments/configs/clickprompt_finetune.py:dataset=synthetic,mode=ctr_only

The mode is a variant argument (it also sets what init_from keeps). With
init_from the backbone, PLM, K and the position rule are the PA-MLM run's.
Rerunning on the same workdir resumes.
"""
import ml_collections as mlc

from experiments.configs import clickprompt_pretrain
from experiments.configs import common
from experiments.configs import data as data_configs
from experiments.configs import presets

MODES = ("prefix_add", "ctr_only", "add", "nlp_only", "prompt_add", "prefix",
         "prompt")
# Top-level param subtrees of each mode (what init_from may keep).
_PARTS = {"prefix_add": ("ctr", "plm", "prompt_generator"),
          "prefix": ("ctr", "plm", "prompt_generator"),
          "prompt_add": ("ctr", "plm", "prompt_generator"),
          "prompt": ("ctr", "plm", "prompt_generator"),
          "add": ("ctr", "plm"), "ctr_only": ("ctr",), "nlp_only": ("plm",)}
_PRETRAINED = ("ctr", "plm", "prompt_generator", "lm_head")


def get_config(arg=None):
  arg = common.parse_arg(arg, dataset="synthetic", mode="prefix_add",
                         ctr="dcnv2", plm="minilm-l6", preset="cpu-small")
  if arg.mode not in MODES:
    raise ValueError(f"mode {arg.mode!r}: expected one of {MODES}")
  common.check_preset(arg.preset, clickprompt_pretrain.PRESETS)
  small, plm = arg.preset != "full", arg.mode != "ctr_only"
  cfg = common.skeleton("clickprompt_finetune", seed=42)
  cfg.data = presets.apply_data_preset(
      data_configs.get_data_config(arg.dataset), arg.dataset, arg.preset)
  cfg.model = clickprompt_pretrain.model_config(arg.dataset, arg.ctr, arg.plm,
                                                arg.preset)
  cfg.clickprompt = clickprompt_pretrain.clickprompt_config()
  # ctr_head input: q ('no'), the prompts' mean ('avg') or concatenation
  # ('cat'); tuned over no/avg/cat in the released grid.
  cfg.clickprompt.prompt_usage = "no"
  # PLM pooling: cls | avg | avg_first_last | avg_top2 (tuned; text mask).
  cfg.clickprompt.pooler = "cls"

  cfg.finetune = mlc.ConfigDict({"mode": arg.mode})
  cfg.loss = mlc.ConfigDict()
  # Mean BCE over the batch (nn.BCEWithLogitsLoss).
  cfg.loss.reduction = "mean"

  # [paper-unverified] batch 256 / 1024 / 4096 by dataset; ML-1M 4 epochs,
  # the others {2, 3}; evaluation each epoch, patience 2.
  batch_size = 256 if plm else 1024
  num_epochs = 4 if arg.dataset in ("ml-1m", "synthetic", "ml-100k") else 3
  eval_every, max_steps = -1, -1
  if small:
    batch_size = (32 if plm else 64) if arg.preset == "tiny" else (
        32 if plm else 256)
    num_epochs = 3
    if plm:
      eval_every = 20 if arg.preset == "tiny" else (
          30 if arg.dataset == "synthetic" else 100)
      max_steps = 60 if arg.preset == "tiny" else (
          150 if arg.dataset == "synthetic" else 300)
  cfg.train = common.train_config(
      batch_size=batch_size, num_epochs=num_epochs, max_steps=max_steps,
      eval_every_steps=eval_every, patience=2,
      eval_batch_size=256 if plm else 2048)

  cfg.optim = clickprompt_pretrain.optim_config(
      # Paper: CTR 1e-3; PLM {0, 3e-5, 5e-5} (0 = frozen). The short presets
      # give the PLM bigger steps.
      ctr_lr=1e-3,
      plm_lr={"tiny": 1e-3, "cpu-small": 2e-4, "full": 5e-5}[arg.preset],
      # Released grid {0, 0.1, 0.5}.
      weight_decay=0.0, warmup_steps=0,
      epochs_ref=cfg.train.get_ref("num_epochs"))

  parts = _PARTS[arg.mode]
  # init_from (a PA-MLM workdir): keep the mode's parts, drop the rest;
  # the heads (ctr_head, nlp_head, alpha) are new.
  cfg.ckpt = common.ckpt_config(
      every_steps=-1, keep=2, async_save=False,
      keep_regex=[f"^{p}/" for p in parts],
      drop_regex=[f"^{p}/" for p in _PRETRAINED if p not in parts]
      + [r"^lm_decoder$"])
  cfg.log_every_steps = 20 if plm else 50
  return cfg
