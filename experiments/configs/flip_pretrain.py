"""FLIP pretraining (MLM + MTM + ICL in one sharded step).

  # embedded synthetic data, CPU-sized preset (minutes on 2 cores):
  python -m experiments.pretrain --workdir runs/pre_syn \
    --config experiments/configs/flip_pretrain.py:dataset=synthetic

  # MovieLens-1M, DCNv2 + MiniLM-L6, the official sizes:
  python -m experiments.pretrain --workdir runs/pre_ml1m \
    --config experiments/configs/flip_pretrain.py:dataset=ml-1m,preset=full \
    --config.data.data_dir ../shared/data/ml-1m

  # a local Hugging Face folder as the PLM, DeepFM as the ID backbone:
    --config experiments/configs/flip_pretrain.py:dataset=ml-1m,ctr=deepfm,plm=/models/tinybert

Rerunning the same command on the same workdir resumes from the latest
checkpoint (state, RNG and data-iterator position).
"""
import ml_collections as mlc

from experiments.configs import common
from experiments.configs import data as data_configs
from experiments.configs import official
from experiments.configs import presets

# The presets FLIP has (presets.PRESETS: tiny, cpu-small, cpu-full, full).
PRESETS = presets.PRESETS
# cpu-full pretraining: 350 steps of 64 = 22,400 examples (a quarter of an
# epoch of ML-100K's train+valid rows), about 8 minutes on 2 cores.
CPU_FULL_PRETRAIN_STEPS = 350
# It stops within its first epoch, where the official per-epoch cosine is a
# constant: it warms up over 5 % of its steps and decays linearly to 0.
CPU_FULL_PRETRAIN_SCHEDULE = {"name": "linear", "warmup_steps": 0.05}


# The preset table (common.preset_row). batch_size: global, over all devices
# and hosts (official: 128 x 8 GPUs). max_steps: the CPU presets stop within
# the first epoch (cpu-full: CPU_FULL_PRETRAIN_STEPS), full trains its
# epochs. micro_batch_size: micro-batches keep ICL over the whole global
# batch by cached gradients (one more forward of the unmasked pass); on a
# 2-core CPU 8-16-row micro-batches are the fastest (RESULTS.md, micro-batch
# sweep), on accelerators the whole batch in one pass (0). lr: official
# 1e-4; the short presets take bigger steps.
BUDGETS = {
    "tiny": dict(batch_size=16, num_epochs=1, max_steps=30,
                 micro_batch_size=0, lr=1e-3, log_every_steps=5,
                 ckpt_every_steps=15),
    "cpu-small": dict(batch_size=32, num_epochs=1,
                      max_steps={"synthetic": 70, "other": 300},
                      micro_batch_size=0, lr=3e-4, log_every_steps=20,
                      ckpt_every_steps=100),
    "cpu-full": dict(batch_size=64, num_epochs=1,
                     max_steps=CPU_FULL_PRETRAIN_STEPS,
                     micro_batch_size=common.CPU_MICRO_BATCH, lr=3e-4,
                     log_every_steps=50, ckpt_every_steps=200),
    "full": dict(batch_size=official.FLIP_PRETRAIN["batch_size"],
                 num_epochs=official.FLIP_PRETRAIN["epochs"], max_steps=-1,
                 micro_batch_size=0, lr=1e-4, log_every_steps=100,
                 ckpt_every_steps=1000),
}

def get_config(arg=None):
  arg = common.parse_arg(arg, dataset="synthetic", ctr="dcnv2",
                         plm="minilm-l6", preset="cpu-small")
  common.check_preset(arg.preset, PRESETS)
  cfg = common.skeleton("flip_pretrain")
  cfg.data = presets.apply_data_preset(
      data_configs.get_data_config(arg.dataset), arg.dataset, arg.preset)
  cfg.model = presets.model_config(arg.ctr, arg.plm, arg.preset,
                                   arg.dataset)

  row = common.preset_row(BUDGETS, arg.preset, arg.dataset)
  cfg.train = common.train_config(
      batch_size=row.batch_size, num_epochs=row.num_epochs,
      max_steps=row.max_steps, micro_batch_size=row.micro_batch_size)

  p = cfg.pretrain = mlc.ConfigDict()
  # ICL monitored at every log step on a fixed held-out batch (the first
  # rows of the test split, which pretraining never reads) in eval mode:
  # logged as heldout/icl_acc (chance 1/rows) and heldout/icl_loss (chance
  # ln rows); 0 = off. As many rows as a training batch.
  p.heldout_rows = cfg.train.batch_size
  p.proj_dim = 128
  p.proj_dropout = 0.2
  # One unmasked PLM pass feeds ICL and MTM (False = official: two passes).
  p.share_unmasked_pass = True
  # The masks themselves (ratios 0.15, 'field' rule, mask_same_column) are
  # drawn by the input pipeline: see config.data.*_mask_ratio / mlm_rule.
  # ICL weight 1/8 reproduces the official 8-GPU optimisation (FLIP.md 5.3).
  p.icl = mlc.ConfigDict({"enabled": True, "weight": 0.125,
                          "temperature": 0.7, "normalize": False})
  p.mlm = mlc.ConfigDict({
      "enabled": True, "weight": 1.0,
      "head_dropout": 0.2,
      # MLM head only on masked positions (False = official: all B x L).
      "masked_only": True,
      # Masked positions kept per row in the fast form (more are counted
      # in train/mlm_dropped); -1 = the most any row of the data can get.
      "max_masked": -1,
  })
  p.mtm = mlc.ConfigDict({
      "enabled": True, "weight": 1.0,
      "loss": "nce",            # nce | sampled | full
      "num_negatives": 25,
      "noise": "global",        # global | per_field
      "attn_padding_mask": True,
      # Scale of the read-out scores (None = unscaled, as the code).
      "attn_scale": mlc.config_dict.placeholder(float),
      "field_dim": 32,
  })

  # AdamW decaying every param; official lr 1e-4 (the short presets take
  # bigger steps); cosine stepped once per epoch, no warm-up (FLIP.md 5.8).
  # full: over the official 30 epochs whatever train.num_epochs, so a run
  # cut to fewer epochs stops early on the official curve instead of
  # compressing it (set optim.schedule.epochs to compress it; the report
  # says so). The short presets stop within their first epoch, where the
  # per-epoch cosine is constant. cpu-full: CPU_FULL_PRETRAIN_SCHEDULE.
  cfg.optim = common.optim_config(
      name="adamw", lr=row.lr, weight_decay=1e-3,
      schedule="cosine_epoch",
      epochs=(official.FLIP_PRETRAIN["epochs"] if arg.preset == "full"
              else cfg.train.get_ref("num_epochs")))
  if arg.preset == "cpu-full":
    cfg.optim.schedule = mlc.ConfigDict(CPU_FULL_PRETRAIN_SCHEDULE)

  cfg.log_every_steps = row.log_every_steps
  cfg.ckpt = common.ckpt_config(every_steps=row.ckpt_every_steps, keep=3,
                                async_save=True)
  return cfg
