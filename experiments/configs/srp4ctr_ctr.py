"""SRP4CTR CTR models: SRP4CTR, its ablations, DIN and the backbone alone.

  # SRP4CTR from an FG-BERT pretraining run (finetuned encoder):
  python -m experiments.train --workdir runs/srp_ml100k \
    --config experiments/configs/srp4ctr_ctr.py:dataset=ml-100k \
    --config.data.data_dir ../shared/data/ml-100k \
    --config.srp4ctr.pretrained runs/srp_pre_ml100k

  # the same with the pretrained encoder frozen:
    --config experiments/configs/srp4ctr_ctr.py:dataset=ml-100k,freeze=true
  # ablations and baselines (same samples, same backbone):
    ...:variant=no_cross      without the uni cross-attention
    ...:variant=no_queries    without the querying transformer
    ...:variant=din           DIN target attention over the raw history
    ...:variant=backbone      the backbone without sequence knowledge
  # ID-only BERT4Rec pretraining instead of FG-BERT: pretrain with
  # attributes=id and point srp4ctr.pretrained at that run.

With srp4ctr.pretrained set, the encoder's sizes and the `sequence` section
are the pretraining run's. Rerunning on the same workdir resumes.
"""
import ml_collections as mlc

from experiments.configs import common
from experiments.configs import ctr as ctr_configs
from experiments.configs import srp4ctr_common

VARIANTS = ("srp4ctr", "no_cross", "no_queries", "din", "backbone")


# The CTR stages' preset table (common.preset_row).
BUDGETS = {
    "tiny": dict(batch_size=32, num_epochs=1, max_steps=20,
                 eval_every_steps=10, eval_batch_size=64, log_every_steps=5),
    "cpu-small": dict(batch_size=256, num_epochs=5, max_steps=-1,
                      eval_every_steps=-1, eval_batch_size=1024,
                      log_every_steps=50),
    "full": dict(batch_size=1024, num_epochs=10, max_steps=-1,
                 eval_every_steps=-1, eval_batch_size=4096,
                 log_every_steps=100),
}

def get_config(arg=None):
  arg = common.parse_arg(arg, dataset="synthetic", preset="cpu-small",
                         ctr="dcnv2", variant="srp4ctr", freeze=False,
                         attributes="fg")
  srp4ctr_common.check_preset(arg.preset)
  if arg.variant not in VARIANTS:
    raise ValueError(f"variant {arg.variant!r}: expected one of {VARIANTS}")
  cfg = common.skeleton("srp4ctr")
  cfg.data = srp4ctr_common.data_config(arg.dataset, arg.preset)
  cfg.sequence = srp4ctr_common.sequence_config(arg.dataset, arg.preset,
                                                arg.attributes)
  cfg.model = mlc.ConfigDict()
  # The CTR backbone (B7.5: DCNv2 for continuity with FLIP; DIN is the
  # main comparison model). Every zoo field with its default.
  cfg.model.ctr = ctr_configs.model_config(arg.ctr)
  cfg.model.seq = srp4ctr_common.seq_model_config(arg.preset)
  cfg.model.dtype = "float32"

  s = cfg.srp4ctr = mlc.ConfigDict()
  # 'fgbert' (SRP4CTR and its ablations), 'din' or 'none' (backbone).
  s.sequence = {"din": "din", "backbone": "none"}.get(arg.variant, "fgbert")
  # The uni cross-attention block (B3): target -> pretrained states.
  s.cross_attention = arg.variant not in ("no_cross", "din", "backbone")
  # N query tokens of the querying transformer (B7.4: 8; 0 = none).
  s.num_queries = 0 if arg.variant in ("no_queries", "din",
                                       "backbone") else 8
  # Cross-attention layers of the querying transformer (B4: 1-2).
  s.query_layers = 1
  # An FG-BERT pretraining workdir ('' = the encoder from scratch); the
  # workflow sets it. Its step (-1 = latest).
  s.pretrained = ""
  s.pretrained_step = -1
  # Cross-attention layer l starts as a copy of pretrained layer l's
  # query / output / FFN / LayerNorms [assumed] (False: fresh).
  s.cross_from_pretrained = True
  # DIN's attention unit (deepctr: 80-40; Dice there, sigmoid here).
  s.din = mlc.ConfigDict({"hidden": (80, 40), "act": "sigmoid"})

  cfg.loss = mlc.ConfigDict()
  cfg.loss.reduction = "mean"
  # Explicit L2 (a loss term) on the params matching l2_regex; 0 = none.
  cfg.loss.l2 = 0.0
  cfg.loss.l2_regex = [r"^ctr/embedding/", r"^ctr/linear/"]

  row = common.preset_row(BUDGETS, arg.preset, arg.dataset)
  cfg.train = common.train_config(
      batch_size=row.batch_size, num_epochs=row.num_epochs,
      max_steps=row.max_steps, eval_every_steps=row.eval_every_steps,
      eval_batch_size=row.eval_batch_size, patience=2)
  # B5 mentions polynomial decay; the shared builder has none, so constant
  # (cosine in pretraining) [assumed].
  cfg.optim = common.optim_config(name="adam", lr=1e-3, weight_decay=0.0,
                                  decay_mask="no_bias_norm")
  # B7.7: frozen vs finetuned pretrained parameters (both are run).
  cfg.optim.freeze = [r"^seq/"] if arg.freeze else []
  cfg.log_every_steps = row.log_every_steps
  cfg.ckpt = common.ckpt_config(every_steps=-1, keep=2, async_save=False)
  return cfg
