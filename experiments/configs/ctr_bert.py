"""CTR-BERT, the paper's two-tower PLM baseline (FLIP.md 7).

  # embedded synthetic data, CPU-sized preset:
  python -m experiments.train --workdir runs/ctr_bert_syn \
    --config experiments/configs/ctr_bert.py:dataset=synthetic

  # MovieLens-1M, the official recipe (two towers, batch 128, lr 5e-5,
  # 10 epochs, patience 3):
  python -m experiments.train --workdir runs/ctr_bert_ml1m \
    --config experiments/configs/ctr_bert.py:dataset=ml-1m,preset=full \
    --config.data.data_dir ../shared/data/ml-1m

  # one PLM for both texts instead of two:
    --config.ctr_bert.share_plm=True

The user text is the prompt's clauses of ``ctr_bert.user_fields``, the
item text the other clauses; both towers start from the public PLM
weights. Rerunning the same command on the same workdir resumes.
"""
import ml_collections as mlc

from experiments.configs import common
from experiments.configs import data as data_configs
from experiments.configs import flip_finetune
from experiments.configs import flip_pretrain
from experiments.configs import presets

# The user's fields of each dataset (the item tower reads the others).
USER_FIELDS = {
    "synthetic": ("user_id", "gender", "age", "occupation", "zipcode"),
    "ml-1m": ("user_id", "gender", "age", "occupation", "zipcode"),
    "ml-100k": ("user_id", "gender", "age", "occupation", "zipcode"),
    "bookcrossing": ("user_id", "location", "age"),
    "goodreads": ("user_id",),
    # A CSV source names its own fields; set ctr_bert.user_fields to match.
    "csv": ("user_id",),
}


def get_config(arg=None):
  arg = common.parse_arg(arg, dataset="synthetic", ctr="dcnv2",
                         plm="minilm-l6", preset="cpu-small")
  common.check_preset(arg.preset, flip_pretrain.PRESETS)
  if arg.dataset not in USER_FIELDS:
    raise ValueError(f"dataset {arg.dataset!r}: no default user fields; "
                     f"known: {sorted(USER_FIELDS)}")
  cfg = common.skeleton("ctr_bert")
  cfg.data = presets.apply_data_preset(
      data_configs.get_data_config(arg.dataset), arg.dataset, arg.preset)
  # model.ctr is unused (no ID model); kept so one model section serves
  # every task of a run_all.
  cfg.model = presets.model_config(arg.ctr, arg.plm, arg.preset,
                                   arg.dataset)

  c = cfg.ctr_bert = mlc.ConfigDict()
  # Fields whose clauses form the user text; every other field's clause
  # goes to the item text (in field order).
  c.user_fields = list(USER_FIELDS[arg.dataset])
  # Official: two PLMs (user_model, item_model), both from the checkpoint.
  c.share_plm = False
  # Tokens per tower text, specials included; -1 = data.max_length, so a
  # tower is never cut where the prompt is not (official: max_length // 2
  # = 50 on ML-1M). With data.pad_to='longest' each tower is then cut to
  # its longest row.
  c.max_length = -1
  # Prediction layer: Linear(2H, mlp_hidden) -> tanh -> dropout -> Linear.
  c.mlp_hidden = 128
  c.mlp_dropout = 0.2

  # The CPU presets: FLIP's PLM-only budget (flip_finetune.plm_budget);
  # 'full': the official recipe, 10 epochs of 128.
  budget = flip_finetune.plm_budget(arg.preset, arg.dataset) if (
      arg.preset != "full") else dict(
          batch_size=128, num_epochs=10, max_steps=-1, eval_every_steps=-1,
          micro_batch_size=0)
  cfg.train = common.train_config(**budget, eval_batch_size=256, patience=3)

  # Official 5e-5 (AdamW, weight decay 1e-3) at a constant learning rate
  # (its schedulers are commented out); the CPU presets take FLIP_PLM's.
  cfg.optim = flip_finetune.plm_optim(arg.preset)

  # No init_from: the towers start from the public weights.
  cfg.ckpt = common.ckpt_config(every_steps=-1, keep=2, async_save=False)
  cfg.log_every_steps = 20
  return cfg
