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
  cfg.model = presets.model_config(arg.ctr, arg.plm, arg.preset)

  cfg.p_tab = mlc.ConfigDict()
  # Masked positions per row the MLM head sees (static shape); -1 = the
  # binomial mean + 4 standard deviations (drops, counted in
  # train/mlm_dropped, are rarer than 1 row in 10^4); data.max_length =
  # every position, never a drop.
  cfg.p_tab.max_masked = -1

  cfg.train = common.train_config(
      # Official: 128 per GPU with 2 accumulation steps.
      batch_size={"tiny": 16, "cpu-small": 32, "cpu-full": 64,
                  "full": 256}[arg.preset],
      num_epochs={"tiny": 1, "cpu-small": 1, "cpu-full": 1,
                  "full": 10}[arg.preset],
      max_steps={"tiny": 30, "cpu-small": 150 if arg.dataset == "synthetic"
                 else 300,
                 "cpu-full": flip_pretrain.CPU_FULL_PRETRAIN_STEPS,
                 "full": -1}[arg.preset],
      micro_batch_size=common.CPU_MICRO_BATCH if arg.preset == "cpu-full"
      else 0)

  # Official 5e-5 (the short presets take FLIP pretraining's steps);
  # CosineAnnealingLR stepped once per epoch, no warm-up.
  cfg.optim = common.optim_config(
      name="adamw", lr={"tiny": 1e-3, "cpu-small": 3e-4, "cpu-full": 3e-4,
                        "full": 5e-5}[arg.preset], weight_decay=1e-3,
      schedule="cosine_epoch", epochs=cfg.train.get_ref("num_epochs"))
  if arg.preset == "cpu-full":  # FLIP pretraining's schedule of this preset
    cfg.optim.schedule = mlc.ConfigDict(
        flip_pretrain.CPU_FULL_PRETRAIN_SCHEDULE)

  cfg.log_every_steps = {"tiny": 5, "cpu-small": 20, "cpu-full": 50,
                         "full": 100}[arg.preset]
  cfg.ckpt = common.ckpt_config(
      every_steps={"tiny": 15, "cpu-small": 100, "cpu-full": 200,
                   "full": 1000}[arg.preset],
      keep=3, async_save=True)
  return cfg
