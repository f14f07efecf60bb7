"""Data config: every default of the data layer (FLIP.md 2, 5.1, 11).

Other configs embed `get_data_config(dataset)` as their `config.data`.
As a config file of its own it drives data preparation:

  python -m experiments.prepare_data --dataset=synthetic --workdir=runs/data_synthetic
  python -m experiments.prepare_data --dataset=ml-1m \
    --data_dir=../shared/data/ml-1m --workdir=runs/data_ml1m
  python -m experiments.prepare_data --dataset=ml-100k \
    --data_dir=../shared/data/ml-100k --workdir=runs/data_ml100k \
    --config=experiments/configs/data.py:dataset=ml-100k \
    --config.max_length=64 --config.data_dir=../shared/data/ml-100k
"""
from __future__ import annotations

import ml_collections as mlc

from experiments.configs import common
from flip_jax.data import sources

# The datasets the data layer reads (its reader registry is the truth).
DATASETS = sources.dataset_names()


def get_data_config(dataset: str) -> mlc.ConfigDict:
  """All data defaults for one dataset.

  Args:
    dataset: one of DATASETS.

  Returns:
    The `data` ConfigDict.
  """
  if dataset not in DATASETS:
    raise ValueError(f"unknown dataset {dataset!r}; known datasets: "
                     f"{', '.join(DATASETS)}")
  movielens = dataset in ("synthetic", "ml-1m", "ml-100k")
  c = mlc.ConfigDict()
  c.dataset = dataset
  # Raw files; '' for synthetic (generated under the cache root).
  c.data_dir = ""
  # Root of processed-data caches; '' = prepare.default_cache_root:
  # <parent of workdir>/.flip_jax_cache.
  c.cache_dir = ""
  # Tokenizer / PLM name ('minilm-l6') or a local Hugging Face folder.
  c.tokenizer = "minilm-l6"
  # Text length L including [CLS]/[SEP] (FLIP.md 2.2).
  c.max_length = 180 if dataset == "goodreads" else 100
  # Token columns are padded to 'longest' = the longest prompt of the data
  # (at most max_length; the padding is masked out, so outputs are the
  # same up to float summation order, and steps are cheaper), or to
  # 'max_length' always (the official form).
  c.pad_to = "longest"
  # 'flip_jax' = train/valid/test 80/10/10; 'official' = 90/10, no valid.
  c.protocol = "flip_jax"
  c.split_fractions = (0.8, 0.1, 0.1)
  c.official_fractions = (0.9, 0.0, 0.1)
  # Seed of the random row order used when the dataset has no timestamp.
  c.split_seed = 2012
  # Fraction of rows kept (index-based, seeded); 1.0 = all.
  c.subsample = 1.0
  c.subsample_seed = 2012
  # click = rating >= label_threshold (FLIP.md 2.4).
  c.label_threshold = {"bookcrossing": 5.0, "csv": 1.0}.get(dataset, 4.0)
  # Drop the neutral rating (ML: 3) before labelling.
  c.drop_neutral = False
  # The neutral rating for drop_neutral; -1 = the dataset has none.
  c.neutral_rating = 3.0 if movielens else -1.0
  # BookCrossing 0 = implicit interaction, GoodReads 0 = not rated.
  c.drop_zero_ratings = dataset in ("bookcrossing", "goodreads")
  # Pretraining masks (FLIP.md 5.1).
  c.text_mask_ratio = 0.15
  c.ctr_mask_ratio = 0.15
  # MLM masking: 'field' (FLIP: whole values) or 'token' (BERT 15% 80/10/10).
  c.mlm_rule = "field"
  c.token_mask_prob = 0.15
  c.mask_same_column = False
  # Data-loader worker processes (0 = in the main process).
  c.worker_count = 0
  c.synthetic = mlc.ConfigDict(dict(
      num_users=600, num_movies=400, num_ratings=40000, seed=2012,
      # Strength of the planted ID signal vs the title-word signal.
      id_weight=1.0, word_weight=1.0, start_timestamp=956703932))
  # Generic CSV/parquet source (dataset='csv').
  c.csv = mlc.ConfigDict(dict(
      path="", format="", sep=",", encoding="utf-8",
      fields=(), display_names=(),
      # Exactly one of rating_column (thresholded) / label_column (0/1).
      rating_column="", label_column="",
      timestamp_column=""))
  return c


def get_config(arg: str | None = None) -> mlc.ConfigDict:
  """Config of experiments.prepare_data: the data config itself.

  Args:
    arg: variant string, 'dataset=<name>'.

  Returns:
    get_data_config(dataset) plus `num_examples` (prompts to print), so
    flags override data fields directly: --config.max_length=64.
  """
  arg = common.parse_arg(arg, dataset="synthetic")
  cfg = get_data_config(arg.dataset)
  # Prompts printed by prepare_data.
  cfg.num_examples = 3
  return cfg
