"""ClickPrompt PA-MLM pretraining (CLICKPROMPT_SRP4CTR.md A6).

  # embedded synthetic data, CPU-sized preset:
  python -m experiments.train --workdir runs/cp_pre_syn \
    --config experiments/configs/clickprompt_pretrain.py:dataset=synthetic

  # MovieLens-1M, full-rank DCNv2 + a local RoBERTa-base folder, the
  # official sizes (batch 1024, lr 5e-5 / 1e-3, 20 epochs, K = 10):
  python -m experiments.train --workdir runs/cp_pre_ml1m \
    --config experiments/configs/clickprompt_pretrain.py:dataset=ml-1m,preset=full,plm=/models/roberta-base \
    --config.data.data_dir ../shared/data/ml-1m

  # the official bias/LayerNorm learning-rate quirk (spec A8, an ablation):
    --config.optim.reproduce_bias_ln_lr_quirk=True

Rerunning the same command on the same workdir resumes.
"""
import ml_collections as mlc

from experiments.configs import common
from experiments.configs import ctr as ctr_configs
from experiments.configs import data as data_configs
from experiments.configs import presets

PRESETS = ("tiny", "cpu-small", "full")

# The official DCNv2 sizes (spec A3, utils.get_ctr_model_param): embedding,
# DNN width, DNN layers, cross layers. Datasets the code has no entry for
# take ML-1M's.
DCNV2_SIZES = {"ml-1m": (32, 256, 6, 6), "bookcrossing": (32, 256, 6, 6),
               "goodreads": (16, 512, 6, 6), "amazon-toys": (16, 256, 3, 3)}


# The PA-MLM preset table (common.preset_row). Official batch 1024 (16 per
# device x accumulation), 20 epochs, PLM lr 5e-5; the short presets take
# bigger steps.
BUDGETS = {
    "tiny": dict(batch_size=16, num_epochs=1, max_steps=30, plm_lr=1e-3,
                 log_every_steps=5, ckpt_every_steps=15),
    "cpu-small": dict(batch_size=32, num_epochs=1,
                      max_steps={"synthetic": 150, "other": 300},
                      plm_lr=3e-4, log_every_steps=20, ckpt_every_steps=100),
    "full": dict(batch_size=1024, num_epochs=20, max_steps=-1, plm_lr=5e-5,
                 log_every_steps=100, ckpt_every_steps=1000),
}

def model_config(dataset: str, ctr: str, plm: str, preset: str
                 ) -> mlc.ConfigDict:
  """ID backbone (ClickPrompt's full-rank DCNv2) and PLM; shared with
  finetuning."""
  m = presets.model_config(ctr, plm, preset, dataset)
  embed, hidden, layers, cross = DCNV2_SIZES.get(dataset,
                                                 DCNV2_SIZES["ml-1m"])
  if preset != "full":  # CPU presets: the same shape, fewer layers
    hidden, layers, cross = 64, 2, 2
  m.ctr = ctr_configs.model_config(ctr)
  m.ctr.update(embed_dim=embed, dnn_hidden=(hidden,) * layers,
               cross_layers=cross, dropout=0.0,
               # ClickPrompt's DCNv2 is the full-rank CrossNetV2 (spec A3).
               cross_type="full")
  return m


def clickprompt_config() -> mlc.ConfigDict:
  """``config.clickprompt``: the method's fields (shared with finetuning)."""
  return mlc.ConfigDict(dict(
      # K prompts per layer: the code default 10 (the paper tunes 1/3/5/7).
      num_prompt=10,
      # Pretraining prompts: 'prefix' (layer-wise key/value prefixes, the
      # method), 'prompt' (input-layer prompts, the ablation) or 'none'
      # (the PLM's plain MLM, no CTR model: the official nlp_only MLM).
      fusion="prefix",
      # Finetuning fields (read by the finetuning config's modes).
      prompt_usage="no",
      pooler="cls",
      alpha=dict(
          # α·l_CTR + (1-α)·l_PLM (paper); False = l_CTR + l_PLM (code).
          weighted=True, learnable=True, init=0.5),
      # Text positions start after the K prefix slots, as HF does after a
      # K-long cache (spec A5; for BERT-type PLMs [assumed]). False = the
      # prefix takes no positions.
      shift_positions=True,
      # LM decoder: an untied copy of the word table (official: a separate
      # RobertaLMHead loaded from the checkpoint); True = tied.
      lm_tied=False,
      # Compute dtype of the generators (their kernels are float32 always).
      generator_dtype="float32",
      # 'xavier': the official weight_init (Xavier-normal weights, zero
      # biases) for the CTR model on fresh runs; 'zoo': the zoo's own init.
      ctr_init="xavier",
  ))


def optim_config(*, ctr_lr: float, plm_lr: float, weight_decay: float,
                 warmup_steps: int, epochs_ref) -> mlc.ConfigDict:
  """AdamW with ClickPrompt's groups (spec A8); shared with finetuning.

  The shared optimizer fields (``common.optim_config``; biases and
  LayerNorms take no decay, at their owner group's lr) plus the groups.
  ``lr`` is the 'ctr' group's: CTR model, generator, ctr_head, alpha (and
  anything no group matches). Official schedule: cosine or linear with
  warm-up ratio {0, 0.05, 0.1}; a ratio needs the loop's total step count,
  so warm-up is given in steps here.
  """
  o = common.optim_config(name="adamw", lr=ctr_lr, weight_decay=weight_decay,
                          schedule="cosine", epochs=epochs_ref,
                          decay_mask="no_bias_norm")
  o.schedule.warmup_steps = warmup_steps
  # Named groups (regex, lr); the task turns them into param_groups (after
  # the extra ones in o.param_groups) for the modes that have such params.
  # lr 0 freezes the group.
  o.groups = mlc.ConfigDict({"plm": {
      "regex": r"^(plm|lm_head|nlp_head)/|^lm_decoder$", "lr": plm_lr}})
  # The official optimizer gives every bias / LayerNorm lr 1e-3 (AdamW's
  # default: the group has no lr). An ablation only.
  o.reproduce_bias_ln_lr_quirk = False
  o.quirk_lr = 1e-3
  return o


def get_config(arg=None):
  arg = common.parse_arg(arg, dataset="synthetic", ctr="dcnv2",
                         plm="minilm-l6", preset="cpu-small")
  common.check_preset(arg.preset, PRESETS)
  # The official default seed (utils.py).
  cfg = common.skeleton("clickprompt_pretrain", seed=42)
  cfg.data = presets.apply_data_preset(
      data_configs.get_data_config(arg.dataset), arg.dataset, arg.preset)
  # Official RoBERTa texts run to <= 512 tokens; ours to data.max_length
  # (+ K prefix positions must fit the table: checked at start-up).
  cfg.model = model_config(arg.dataset, arg.ctr, arg.plm, arg.preset)
  cfg.clickprompt = clickprompt_config()

  p = cfg.pretrain = mlc.ConfigDict()
  # 15 % of the real, non-special tokens; 80 % mask, 10 % random, 10 % kept.
  p.masking = mlc.ConfigDict({"prob": 0.15, "mask_frac": 0.8,
                              "random_frac": 0.1})
  # LM head on at most this many masked positions per row (more are
  # counted in train/mlm_dropped); -1 = 2 x prob x data.max_length.
  p.max_masked = -1

  row = common.preset_row(BUDGETS, arg.preset, arg.dataset)
  cfg.train = common.train_config(
      batch_size=row.batch_size, num_epochs=row.num_epochs,
      max_steps=row.max_steps, micro_batch_size=0)
  cfg.optim = optim_config(
      ctr_lr=1e-3,
      plm_lr=row.plm_lr,
      weight_decay=0.0, warmup_steps=0,
      epochs_ref=cfg.train.get_ref("num_epochs"))
  cfg.log_every_steps = row.log_every_steps
  cfg.ckpt = common.ckpt_config(every_steps=row.ckpt_every_steps, keep=3,
                                async_save=True)
  return cfg
