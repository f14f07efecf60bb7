"""FLIP finetuning for CTR: mode=id (FLIP_ID), plm (FLIP_PLM) or joint (FLIP).

  # from a pretraining run:
  python -m experiments.finetune --workdir runs/ft_joint \
    --config experiments/configs/flip_finetune.py:dataset=synthetic,mode=joint \
    --config.ckpt.init_from runs/pre_syn

  # baselines (no init_from): the ID model from scratch / the PLM-only model
  # from the public weights:
  python -m experiments.finetune --workdir runs/base_id \
    --config experiments/configs/flip_finetune.py:dataset=synthetic,mode=id
  python -m experiments.finetune --workdir runs/base_plm \
    --config experiments/configs/flip_finetune.py:dataset=synthetic,mode=plm

With init_from set, the ID backbone and PLM architecture are taken from the
pretraining run's config.json. Rerunning on the same workdir resumes (the
workdir's own checkpoint wins over init_from).
"""
import ml_collections as mlc

from experiments.configs import common
from experiments.configs import data as data_configs
from experiments.configs import flip_pretrain
from experiments.configs import official
from experiments.configs import presets

# The PLM recipe of the cpu-full preset (modes plm and joint; CTR-BERT
# takes it too), chosen on the valid AUC of the PLM-only model on full
# ML-100K at 32,000 examples (experiments/sweeps/plm_recipe.sh; RESULTS.md,
# "PLM recipe"): lr 2e-4 constant at batch 32 (0.611, still rising) beat
# 5e-4 constant at batch 32 (0.599) and 5e-4 with linear warm-up / decay at
# batch 64 (0.549): the PLM gains per step more than per example. The
# budget, 1,500 steps of 32 = 48,000 examples (0.6 epoch of ML-100K), is
# what 3 seeds of 3 PLM models afford on 2 cores; a model still improving
# at its end is reported as cut off by it.
CPU_FULL_PLM_BATCH = 32
CPU_FULL_PLM_STEPS = 1500
CPU_FULL_PLM_LR = 2e-4
CPU_FULL_PLM_SCHEDULE = {"name": "constant", "warmup_steps": 0}
# The PLM models' learning rate per preset: official 5e-5; the CPU presets
# take bigger steps.
PLM_LR = {"tiny": 1e-3, "cpu-small": 2e-4, "cpu-full": CPU_FULL_PLM_LR,
          "full": 5e-5}


# The learning rate of θ in the alpha=sigmoid variant (short presets,
# full): Adam moves θ by about lr per step, so 1e-3 over the thousands of
# steps of the official budget (1e-2 over the short presets' hundreds)
# lets α reach any mix.
ALPHA_SIGMOID_LR = {False: 1e-2, True: 1e-3}


def plm_budget(preset: str, dataset: str, mode: str = "plm") -> dict:
  """``config.train`` budget of a PLM model (FLIP_PLM / PLM-only, joint,
  CTR-BERT) in the CPU presets (not 'full', whose budgets are the official
  recipes' epochs)."""
  if preset == "cpu-full":
    # Until valid AUC stops rising (patience 3 evaluations, 8 per epoch) or
    # CPU_FULL_PLM_STEPS end.
    return dict(batch_size=CPU_FULL_PLM_BATCH, num_epochs=1,
                max_steps=CPU_FULL_PLM_STEPS, eval_every_steps=-8,
                micro_batch_size=common.CPU_MICRO_BATCH)
  if preset == "tiny":
    return dict(batch_size=32, num_epochs=3, max_steps=60,
                eval_every_steps=20, micro_batch_size=0)
  if preset != "cpu-small":
    raise ValueError(f"preset {preset!r} has no CPU PLM budget")
  synthetic = dataset == "synthetic"
  return dict(
      batch_size=32, num_epochs=3, eval_every_steps=40 if synthetic else 100,
      # The demo (synthetic): the budgets that fit `make demo` in 4 minutes
      # on 2 cores (RESULTS.md, "demo recipe"); the joint model trains its
      # ID branch too. The report says which models they cut off rising.
      max_steps=(160 if mode == "joint" else 120) if synthetic else 300,
      micro_batch_size=common.CPU_MICRO_BATCH)


def plm_optim(preset: str) -> mlc.ConfigDict:
  """AdamW of a PLM model (weight decay 1e-3 on every param, as the
  official code), at PLM_LR; cpu-full's schedule CPU_FULL_PLM_SCHEDULE."""
  optim = common.optim_config(name="adamw", lr=PLM_LR[preset],
                              weight_decay=1e-3)
  if preset == "cpu-full":
    optim.schedule = mlc.ConfigDict(CPU_FULL_PLM_SCHEDULE)
  return optim


def get_config(arg=None):
  arg = common.parse_arg(arg, dataset="synthetic", mode="joint", ctr="dcnv2",
                         plm="minilm-l6", preset="cpu-small", alpha="raw")
  if arg.mode not in ("id", "plm", "joint"):
    raise ValueError(f"mode {arg.mode!r}: expected id|plm|joint")
  if arg.alpha not in ("raw", "sigmoid") or (arg.alpha != "raw"
                                             and arg.mode != "joint"):
    raise ValueError(f"alpha {arg.alpha!r}: expected raw, or sigmoid with "
                     "mode=joint")
  common.check_preset(arg.preset, flip_pretrain.PRESETS)
  cfg = common.skeleton("flip_finetune")
  cfg.data = presets.apply_data_preset(
      data_configs.get_data_config(arg.dataset), arg.dataset, arg.preset)
  cfg.model = presets.model_config(arg.ctr, arg.plm, arg.preset,
                                   arg.dataset)

  f = cfg.finetune = mlc.ConfigDict()
  f.mode = arg.mode
  # Official: α learned from 0, unconstrained ('raw'), at the rate of its
  # param group (5e-5 in full: it can move at most lr x steps). The variant
  # alpha=sigmoid bounds it, α = sigmoid(θ) from 0.5, with θ at its own
  # rate ALPHA_SIGMOID_LR.
  f.alpha_init = 0.0
  f.alpha_param = arg.alpha

  cfg.loss = mlc.ConfigDict()
  # FLIP_ID sums the BCE over the batch (official); the others average.
  cfg.loss.reduction = "sum" if arg.mode == "id" else "mean"
  # Joint: BCE(mix) + aux_weight * (BCE(id) + BCE(plm)).
  cfg.loss.aux_weight = 1.0
  # Explicit L2 on the embedding and linear tables (a loss term).
  cfg.loss.l2 = {"id": 1e-3, "plm": 0.0,
                 "joint": 0.0 if arg.dataset == "goodreads" else 1e-4}[arg.mode]
  cfg.loss.l2_regex = [r"^ctr/embedding/", r"^ctr/linear/"]

  if arg.mode != "id" and arg.preset != "full":
    budget = plm_budget(arg.preset, arg.dataset, arg.mode)
  else:  # the official recipes (FLIP_ID's at batch 64 in tiny): at most
    # `epochs`, one evaluation per epoch, patience in epochs
    official_ft = official.FLIP_FINETUNE[arg.mode]
    budget = dict(
        batch_size=64 if arg.preset == "tiny" else official_ft["batch_size"],
        num_epochs=official_ft["epochs"], max_steps=-1, eval_every_steps=-1,
        patience=official_ft["patience_epochs"], patience_unit="epochs",
        micro_batch_size=0)
  # PLM models: 64-row evaluation batches on CPUs (22 % faster than 256
  # for the demo's valid split, equal AUC; RESULTS.md, "demo recipe").
  cfg.train = common.train_config(
      **budget, eval_batch_size=512 if arg.mode == "id" else
      256 if arg.preset == "full" else 64)

  if arg.mode == "id":
    cfg.optim = common.optim_config(name="adam", lr=1e-3, weight_decay=0.0)
  else:
    cfg.optim = plm_optim(arg.preset)
    # (regex, lr), first match wins. Official joint: 5e-5 for the PLM and
    # for the rest. The short presets give the ID branch the ID recipe's
    # 1e-3 and the mixing scalars 1e-2, so alpha can move in a few hundred
    # steps instead of the official thousands.
    if arg.mode == "joint":
      cfg.optim.param_groups = [(r"^plm/", cfg.optim.lr)]
      if arg.preset != "full":
        cfg.optim.lr = 1e-3
        cfg.optim.param_groups.append((r"^(alpha|out_bias|ctr_bias)$", 1e-2))
      if arg.alpha == "sigmoid":
        cfg.optim.param_groups.insert(
            0, (r"^alpha$", ALPHA_SIGMOID_LR[arg.preset == "full"]))

  keep = {"id": [r"^ctr/"], "plm": [r"^plm/"],
          "joint": [r"^ctr/", r"^plm/"]}[arg.mode]
  drop = [r"^(mlm_head|mtm_head|ctr_proj|txt_proj|nce)/"]
  drop += {"id": [r"^plm/"], "plm": [r"^ctr/"], "joint": []}[arg.mode]
  # init_from: a pretraining workdir; the pretraining heads are dropped and
  # the fresh linear / head of the ID model allowed to be missing.
  cfg.ckpt = common.ckpt_config(
      every_steps=-1, keep=2, async_save=False, keep_regex=keep,
      drop_regex=drop, allow_missing_regex=[r"^ctr/(linear|head)/"])

  cfg.log_every_steps = 50 if arg.mode == "id" else 20
  return cfg
