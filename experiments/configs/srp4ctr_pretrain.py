"""SRP4CTR: FG-BERT pretraining on the train histories (spec B2, B7.2).

  python -m experiments.train --workdir runs/srp_pre_ml100k \
    --config experiments/configs/srp4ctr_pretrain.py:dataset=ml-100k \
    --config.data.data_dir ../shared/data/ml-100k

  # the ID-only BERT4Rec-style pretraining of the ablation:
  python -m experiments.train --workdir runs/srp_pre_id \
    --config experiments/configs/srp4ctr_pretrain.py:dataset=ml-100k,attributes=id \
    --config.data.data_dir ../shared/data/ml-100k

Rerunning the same command on the same workdir resumes.
"""
import ml_collections as mlc

from experiments.configs import common
from experiments.configs import srp4ctr_common


# FG-BERT pretraining's preset table (common.preset_row).
BUDGETS = {
    "tiny": dict(batch_size=16, num_epochs=1, max_steps=20, num_negatives=10,
                 log_every_steps=5, ckpt_every_steps=10),
    "cpu-small": dict(batch_size=64, num_epochs=10, max_steps=600,
                      num_negatives=100, log_every_steps=50,
                      ckpt_every_steps=200),
    "full": dict(batch_size=256, num_epochs=50, max_steps=-1,
                 num_negatives=200, log_every_steps=100,
                 ckpt_every_steps=1000),
}

def get_config(arg=None):
  arg = common.parse_arg(arg, dataset="synthetic", preset="cpu-small",
                         attributes="fg")
  srp4ctr_common.check_preset(arg.preset)
  cfg = common.skeleton("srp4ctr_pretrain")
  row = common.preset_row(BUDGETS, arg.preset, arg.dataset)
  cfg.data = srp4ctr_common.data_config(arg.dataset, arg.preset)
  cfg.sequence = srp4ctr_common.sequence_config(arg.dataset, arg.preset,
                                                arg.attributes)
  cfg.model = mlc.ConfigDict()
  cfg.model.seq = srp4ctr_common.seq_model_config(arg.preset)
  # Compute dtype of FG-BERT (params stay float32).
  cfg.model.dtype = "float32"

  p = cfg.pretrain = mlc.ConfigDict()
  # Fraction of a window's events masked (B7.2: 0.15; tune {0.15, 0.2}).
  p.mask_prob = 0.15
  # Item-ID head: 'sampled' (sampled softmax), 'nce' or 'full' softmax; the
  # small attributes always use a full softmax.
  p.item_loss = "sampled"
  # Noise ids per masked slot, drawn from the train-event item counts.
  p.num_negatives = row.num_negatives
  # Score against the input embedding tables (BERT4Rec ties them).
  p.tie_output = True
  # Loss weight per attribute (empty = 1 each, B7.2: the plain sum).
  p.attribute_weights = ()

  cfg.train = common.train_config(
      batch_size=row.batch_size, num_epochs=row.num_epochs,
      max_steps=row.max_steps)
  # B5 mentions polynomial decay; the shared builder has none: cosine
  # [assumed].
  cfg.optim = common.optim_config(name="adamw", lr=1e-3, weight_decay=0.01,
                                  schedule="cosine", decay_mask="no_bias_norm")
  cfg.log_every_steps = row.log_every_steps
  cfg.ckpt = common.ckpt_config(every_steps=row.ckpt_every_steps, keep=2,
                                async_save=False)
  return cfg
