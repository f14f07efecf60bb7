"""Prepares (parses, splits, encodes, renders, tokenizes) a dataset.

  python -m experiments.prepare_data --dataset=synthetic --workdir=runs/data_synthetic
  python -m experiments.prepare_data --dataset=ml-1m \
    --data_dir=../shared/data/ml-1m --workdir=runs/data_ml1m \
    --config.max_length=64

--config is experiments/configs/data.py (the data config); --dataset picks
that dataset's defaults and keeps explicit --config.* overrides.

Writes <workdir>/stats.json and <workdir>/feature_map.json, keeps the
processed cache under config.cache_dir (default
`prepare.default_cache_root`: <parent of workdir>/.flip_jax_cache) and
prints the statistics and a few prompts with the value spans in brackets.
stats.json has a `warnings` entry (kind -> count) for suspicious input
(duplicate rows or ids, UTF-8 in a latin-1 file, ignored extra files), also
logged as warnings. Bad data stops with one `error: <file>:<line>: ...` line
and exit status 1.
"""
from __future__ import annotations

import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import launch

from experiments.configs import data as data_config
from flip_jax import jsonio
from flip_jax.data import prepare
from flip_jax.data import sources
from flip_jax.data import textify
from flip_jax.data import tokenize as tokenize_lib

_DATASET = launch.flag(
    flags.DEFINE_string, "dataset", None,
    f"one of {', '.join(sources.dataset_names())} (overrides "
    "config.data.dataset and picks that dataset's defaults)")
_DATA_DIR = launch.flag(flags.DEFINE_string, "data_dir", None,
                        "raw data directory")
_WORKDIR = launch.flag(flags.DEFINE_string, "workdir", None,
                       "output directory")
_CONFIG = launch.flag(
    config_flags.DEFINE_config_file, "config",
    os.path.join(os.path.dirname(__file__), "configs", "data.py"),
    "data config file", lock_config=True)
_SEQUENCES = launch.flag(
    flags.DEFINE_bool, "sequences", False, "also write the behaviour-"
    "sequence samples (SRP4CTR) to --out: one row per rating with its "
    "history (flip_jax.data.sequence_samples.write_dataset_samples)")
_OUT = launch.flag(flags.DEFINE_string, "out", None,
                   "parquet file written by --sequences")
_SEQ_LEN = launch.flag(flags.DEFINE_integer, "sequence_length", 200,
                       "--sequences: the last <= N items of a history")



def _resolve_config():
  """The config, rebuilt for --dataset when it differs from the file's."""
  cfg = _CONFIG.value
  dataset = _DATASET.value or cfg.dataset
  if dataset not in sources.dataset_names():
    raise app.UsageError(f"unknown dataset {dataset!r}; known datasets: "
                         f"{', '.join(sources.dataset_names())}")
  if dataset != cfg.dataset:
    fresh = data_config.get_config(f"dataset={dataset}")
    base = data_config.get_config(f"dataset={cfg.dataset}")
    # Keep explicit --config.* overrides; take the dataset's defaults.
    for k, v in cfg.items():
      if k != "dataset" and base[k] != v:
        fresh[k] = v
    cfg = fresh
  if _DATA_DIR.value is not None:
    with cfg.unlocked():
      cfg.data_dir = _DATA_DIR.value
  return cfg


def run(cfg, workdir: str) -> dict:
  """Prepares data per `cfg` into `workdir`; returns the stats dict."""
  os.makedirs(workdir, exist_ok=True)
  data = cfg  # the data config (+ num_examples)
  prepared = prepare.load_dataset(
      data, prepare.default_cache_root(data, workdir))
  prepare.tokenize_dataset(prepared, data.tokenizer, data.max_length)
  text = prepared.stats["text"]
  stats = dict(prepared.stats)
  stats.update(max_text_tokens=text["max_text_tokens"],
               truncated_rows=text["truncated_rows"],
               truncated_fields=text["truncated_fields"],
               max_length=data.max_length, tokenizer=data.tokenizer,
               cache_dir=prepared.cache_dir)
  jsonio.write_json_atomic(os.path.join(workdir, "stats.json"), stats)
  prepared.feature_map.save(os.path.join(workdir, "feature_map.json"))
  keys = ("rows", "train_rows", "valid_rows", "test_rows", "num_fields",
          "field_names", "vocab_sizes", "num_features", "positive_rate",
          "max_text_tokens", "truncated_rows", "row_order", "label_rule",
          "warnings")
  print(f"dataset {data.dataset} (protocol {data.protocol})")
  for k in keys:
    print(f"  {k:16s} {stats.get(k)}")
  train = prepared.splits["train"]
  print(f"first {cfg.num_examples} training prompts (values in brackets):")
  for i in range(min(cfg.num_examples, len(train["text"]))):
    print(f"  [{int(train['label'][i])}] "
          f"{textify.highlight(train['text'][i], train['spans'][i])}")
  return stats


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  if os.path.exists(_WORKDIR.value) and not os.path.isdir(_WORKDIR.value):
    raise NotADirectoryError(f"--workdir {_WORKDIR.value} is a file, not a "
                             "folder")
  cfg = _resolve_config()
  tokenize_lib.check_tokenizer_folder(cfg.tokenizer, "config.tokenizer")
  logging.info("config:\n%s", cfg)
  # A data error (DataError, naming file:line) and every other expected
  # error is printed as one `error: ...` line with exit status 1
  # (launch.run_main).
  if _SEQUENCES.value and not _OUT.value:
    raise app.UsageError("--sequences needs --out=<file.parquet>")
  run(cfg, _WORKDIR.value)
  if _SEQUENCES.value:
    from flip_jax.data import sequence_samples  # pylint: disable=g-import-not-at-top
    n = sequence_samples.write_dataset_samples(cfg, _WORKDIR.value,
                                               _OUT.value, _SEQ_LEN.value)
    print(f"wrote {n} sequence samples to {_OUT.value}")


if __name__ == "__main__":
  launch.run_main(main)
