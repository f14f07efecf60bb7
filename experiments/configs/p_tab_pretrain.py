"""P-Tab stage 1: token-level MLM on the prompt text (FLIP.md 7).

  # embedded synthetic data, CPU-sized preset:
  python -m experiments.train --workdir runs/ptab_pre_syn \
    --config experiments/configs/p_tab_pretrain.py:dataset=synthetic

  # stage 2, [CLS] finetuning from it (FLIP's PLM-only finetuning; the
  # finetuning config keeps plm/ and drops mlm_head/):
  python -m experiments.train --workdir runs/ptab_syn \
    --config experiments/configs/flip_finetune.py:dataset=synthetic,mode=plm \
    --config.ckpt.init_from runs/ptab_pre_syn

  # MovieLens-1M, the official recipe (batch 128 x 2 accumulated, lr 5e-5,
  # 10 epochs, cosine per epoch):
  python -m experiments.train --workdir runs/ptab_pre_ml1m \
    --config experiments/configs/p_tab_pretrain.py:dataset=ml-1m,preset=full \
    --config.data.data_dir ../shared/data/ml-1m

The rows are FLIP's pretraining rows (train + valid, labels unread). The
short presets take FLIP pretraining's budget (batch, steps, learning rate),
so the two stage-1 runs compare at equal cost. Rerunning the same command
on the same workdir resumes.
"""
import ml_collections as mlc

from experiments.configs import common
from experiments.configs import data as data_configs
from experiments.configs import flip_pretrain
from experiments.configs import presets


# The preset table (common.preset_row): FLIP pretraining's short presets;
# full: official batch 256 (128 per GPU with 2 accumulation steps), 10
# epochs at lr 5e-5.
BUDGETS = {
    **flip_pretrain.BUDGETS,
    "full": dict(batch_size=256, num_epochs=10, max_steps=-1,
                 micro_batch_size=0, lr=5e-5, log_every_steps=100,
                 ckpt_every_steps=1000),
}

def get_config(arg=None):
  arg = common.parse_arg(arg, dataset="synthetic", ctr="dcnv2",
                         plm="minilm-l6", preset="cpu-small")
  common.check_preset(arg.preset, flip_pretrain.PRESETS)
  cfg = common.skeleton("p_tab_pretrain")
  cfg.data = presets.apply_data_preset(
      data_configs.get_data_config(arg.dataset), arg.dataset, arg.preset)
  # BERT's masking: each real, non-special token with probability
  # token_mask_prob; 80 % [MASK], 10 % a random token, 10 % unchanged.
  cfg.data.mlm_rule = "token"
  cfg.data.token_mask_prob = 0.15
  # model.ctr is unused here, but the finetuning run that takes this run's
  # PLM reads its whole model section (ckpt.init_from).
  cfg.model = presets.model_config(arg.ctr, arg.plm, arg.preset,
                                   arg.dataset)

  cfg.p_tab = mlc.ConfigDict()
  # Masked positions per row the MLM head sees (static shape); -1 = the
  # binomial mean + 4 standard deviations (drops, counted in
  # train/mlm_dropped, are rarer than 1 row in 10^4); data.max_length =
  # every position, never a drop.
  cfg.p_tab.max_masked = -1

  row = common.preset_row(BUDGETS, arg.preset, arg.dataset)
  cfg.train = common.train_config(
      batch_size=row.batch_size, num_epochs=row.num_epochs,
      max_steps=row.max_steps, micro_batch_size=row.micro_batch_size)

  # Official 5e-5 (the short presets take FLIP pretraining's steps);
  # CosineAnnealingLR stepped once per epoch, no warm-up.
  cfg.optim = common.optim_config(
      name="adamw", lr=row.lr, weight_decay=1e-3,
      schedule="cosine_epoch", epochs=cfg.train.get_ref("num_epochs"))
  if arg.preset == "cpu-full":  # FLIP pretraining's schedule of this preset
    cfg.optim.schedule = mlc.ConfigDict(
        flip_pretrain.CPU_FULL_PRETRAIN_SCHEDULE)

  cfg.log_every_steps = row.log_every_steps
  cfg.ckpt = common.ckpt_config(every_steps=row.ckpt_every_steps, keep=3,
                                async_save=True)
  return cfg
