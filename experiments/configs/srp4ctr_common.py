"""Sections shared by the SRP4CTR configs (pretraining and CTR).

Every choice the paper leaves open (spec B9) is a field here with its
default; [assumed] marks a guess, [paper-unverified] a paper-level value.

Presets: tiny (smoke tests, seconds), cpu-small (minutes on 2 CPU cores),
full (the spec's sizes: L = 200, 2 layers).
"""
from __future__ import annotations

import ml_collections as mlc

from experiments.configs import common
from experiments.configs import data as data_configs
from flip_jax.data import sequences

PRESETS = ("tiny", "cpu-small", "full")
# Token attributes per dataset (flip_jax.data.sequences): 'fg' = FG-BERT's
# item ID + side information (+ the event's feedback), 'id' = ID only
# (the BERT4Rec-style pretraining of the ablation).
_ML = ("item", "genre", "year:title", "feedback")
ATTRIBUTES = {
    "synthetic": _ML, "ml-1m": _ML, "ml-100k": _ML,
    "goodreads": ("item", "book_genres", "publication_year", "author_id",
                  "feedback"),
}


def check_preset(preset: str) -> None:
  common.check_preset(preset, PRESETS)


def data_config(dataset: str, preset: str) -> mlc.ConfigDict:
  """FLIP's data config (same split and vocabularies), never subsampled:
  an index subsample would cut holes into every history."""
  check_preset(preset)
  data = data_configs.get_data_config(dataset)
  if preset == "tiny" and dataset == "synthetic":
    data.synthetic.num_users = 100
    data.synthetic.num_movies = 80
    data.synthetic.num_ratings = 2400
  elif preset == "cpu-small" and dataset == "synthetic":
    data.synthetic.num_ratings = 12000
  return data


def sequence_config(dataset: str, preset: str, attributes: str = "fg"
                    ) -> mlc.ConfigDict:
  """``config.sequence``: what a history token holds and the windows."""
  if attributes not in ("fg", "id"):
    raise ValueError(f"attributes {attributes!r}: expected fg|id")
  if dataset not in ATTRIBUTES:
    raise ValueError(f"srp4ctr: no sequence attributes for {dataset!r} "
                     f"(known: {sorted(ATTRIBUTES)}; BookCrossing has no "
                     "timestamps)")
  return mlc.ConfigDict(dict(
      user_field="user_id",
      item_field=sequences.ITEM_FIELDS.get(dataset, "movie_id"),
      attributes=ATTRIBUTES[dataset] if attributes == "fg" else ("item",),
      # L: the last <= L events strictly before the sample (B2: 200).
      max_length={"tiny": 16, "cpu-small": 50, "full": 200}[preset],
      # Pretraining windows end at a user's last train event and every
      # pretrain_stride events before it [assumed]; a window needs
      # min_events events.
      pretrain_stride={"tiny": 16, "cpu-small": 25, "full": 100}[preset],
      min_events=2,
  ))


def seq_model_config(preset: str) -> mlc.ConfigDict:
  """``model.seq``: FG-BERT's sizes (B9.1 unknown; [assumed] values)."""
  return mlc.ConfigDict(dict(
      hidden={"tiny": 16, "cpu-small": 32, "full": 64}[preset],
      heads=2,
      # B2: 2 transformer layers.
      layers=2,
      mlp={"tiny": 32, "cpu-small": 128, "full": 256}[preset],
      dropout=0.1,
      attention_dropout=0.1,
      # 'gelu' (exact) or 'relu'.
      act="gelu",
      init_std=0.02,
  ))
