"""ID-based CTR models trained from scratch (FLIP.md 3, 6.1, 7, 10).

  python -m experiments.train_ctr --workdir runs/ctr_syn \
    --config experiments/configs/ctr.py:dataset=synthetic,model=dcnv2
  python -m experiments.train_ctr --workdir runs/dcnv2_ml1m \
    --config experiments/configs/ctr.py:dataset=ml-1m,model=dcnv2,recipe=flip_id \
    --config.data.data_dir=../shared/data/ml-1m
  python -m experiments.train_ctr --workdir runs/deepfm_ml1m_base \
    --config experiments/configs/ctr.py:dataset=ml-1m,model=deepfm,recipe=ctr_base \
    --config.data.data_dir=../shared/data/ml-1m

Recipes (the two from-scratch baselines of FLIP.md 10):
  flip_id   finetune_ctr.py: Adam 1e-3, batch 1024, BCE *sum*, L2 1e-3 on the
            embedding + linear tables, <= 20 epochs.
  ctr_base  ctr_base.py: Adam 1e-3, batch 256, BCE sum (deepctr fit), deepctr
            L2 (1e-5 on embeddings, linear, head, cross U/V/C; DNN 0),
            <= 10 epochs.
Both: seed 2012, early stopping on *valid* AUC with patience 3, the best
params reloaded and the test split evaluated once.
"""
import ml_collections as mlc

from experiments.configs import common
from experiments.configs import data as data_configs

RECIPES = ("flip_id", "ctr_base")


def model_config(name: str) -> mlc.ConfigDict:
  """Every `CTRConfig` field (flip_jax.models.ctr.config) with its default."""
  return mlc.ConfigDict(dict(
      name=name,
      embed_dim=32,
      dnn_hidden=(300, 300, 128),
      dnn_act="relu",
      dnn_use_bn=False,
      dropout=0.0,
      dtype="float32",
      # DCN / DCNv2: cross layers; 'mix' = CrossNetMix, 'full' = CrossNetV2.
      cross_layers=2,
      cross_type="mix",
      low_rank=32,
      num_experts=4,
      # AutoInt: no 1/sqrt(d) score scaling, attention init N(0, 0.05).
      att_layers=3,
      att_heads=2,
      att_res=True,
      att_scaling=False,
      att_init_std=0.05,
      # xDeepFM CIN.
      cin_layers=(256, 128),
      cin_split_half=True,
      cin_act="relu",
      # AFN logarithmic neurons and BatchNorm.
      afn_ltl_hidden=256,
      afn_use_bn=True,
      # AFM attention width.
      afm_attention_factor=8,
  ))


def get_config(arg=None):
  arg = common.parse_arg(arg, dataset="synthetic", model="dcnv2",
                         recipe="flip_id")
  if arg.recipe not in RECIPES:
    raise ValueError(f"recipe {arg.recipe!r}: expected one of {RECIPES}")
  flip_id = arg.recipe == "flip_id"
  cfg = common.skeleton("ctr")
  cfg.recipe = arg.recipe
  cfg.data = data_configs.get_data_config(arg.dataset)
  cfg.model = mlc.ConfigDict({"ctr": model_config(arg.model)})

  # Adam without weight decay; L2 is an explicit loss term below.
  cfg.optim = common.optim_config(name="adam", lr=1e-3, weight_decay=0.0)

  cfg.loss = mlc.ConfigDict()
  # 'sum' or 'mean' BCE over the batch.  Both official scripts sum: the
  # deepctr-style BaseModel.fit uses reduction='sum' (justarter/FLIP,
  # model/base_model.py), so ctr_base sums too; with 'mean', divide the L2
  # coefficients by the batch size (l2_scale) to keep the same balance.
  cfg.loss.reduction = "sum"
  # L2 preset (flip_jax.models.ctr.L2_PRESETS): 'flip_id', 'ctr_base', 'none'.
  cfg.loss.l2_preset = "flip_id" if flip_id else "ctr_base"
  # Multiplies every preset coefficient (e.g. 1/batch for 'mean' + flip_id).
  cfg.loss.l2_scale = 1.0

  # Each epoch visits the rows in a fresh seeded permutation (the shared
  # input pipeline); early stopping on valid AUC with patience 3.
  cfg.train = common.train_config(
      batch_size=1024 if flip_id else 256,
      num_epochs=20 if flip_id else 10, eval_batch_size=8192)
  cfg.ckpt = common.ckpt_config(every_steps=-1, keep=2)
  cfg.log_every_steps = 50
  return cfg
