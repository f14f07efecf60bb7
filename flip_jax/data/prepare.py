"""Raw files -> labelled, ordered, split, encoded and rendered columns (cached).

  prepared = load_dataset(config.data,
                          default_cache_root(config.data, workdir))
  columns = tokenize_dataset(prepared, "minilm-l6", config.data.max_length)

Rules (recorded in feature_map.json and stats.json):
* label = rating >= label_threshold (optionally dropping the neutral rating
  first); an already-binary label column is used as is.
* rows are sorted by timestamp (stable: ties keep file order) where the
  dataset has one, else put in a seeded random order.
* optional index-based subsample (seeded), keeping the order.
* split by position: 'flip_jax' 80/10/10 train/valid/test, 'official' 90/10
  train/test (no valid).
* vocabularies and counts come from the pretraining rows (train + valid).
"""
from __future__ import annotations

import dataclasses
import os

from absl import logging
import numpy as np

from flip_jax.data import cache
from flip_jax.data import features
from flip_jax.data import rawio
from flip_jax.data import sources
from flip_jax.data import synthetic
from flip_jax.data import textify
from flip_jax.data import tokenize as tokenize_lib

# Bump when the processing changes, so old caches are not reused.
PROCESSING_VERSION = 2  # 2: rows field-count and range checked
BASE_COLUMNS = ("ids", "label", "row_id", "text", "spans", "timestamp")
TOKEN_COLUMNS = ("input_ids", "attention_mask", "token_field")
# Folder name of the default cache root, beside the run's workdir.
DEFAULT_CACHE_NAME = ".flip_jax_cache"


def default_cache_root(data_cfg, workdir: str | os.PathLike) -> str:
  """The processed-data cache root of a run: the one rule.

  ``data_cfg.cache_dir`` when set, else ``<parent of workdir>/.flip_jax_cache``
  (beside the workdir, so the runs of one folder, e.g. data preparation,
  pretraining and finetuning, share one cache).

  Args:
    data_cfg: the `data` ConfigDict (experiments/configs/data.py).
    workdir: the run directory.

  Returns:
    The cache root (as given when configured, else an absolute path).
  """
  if data_cfg.cache_dir:
    return data_cfg.cache_dir
  return os.path.join(os.path.dirname(os.path.abspath(workdir)) or ".",
                      DEFAULT_CACHE_NAME)


@dataclasses.dataclass
class PreparedData:
  """Processed dataset.

  Attributes:
    feature_map: vocabularies, offsets and counts.
    splits: name -> columns: ids int32 [n, F], label float32 [n], row_id
      int32 [n], text object [n] of str, spans int32 [n, F, 2], timestamp
      int64 [n] (-1 where the dataset has none).
    stats: dataset statistics (see experiments.prepare_data).
    cache_dir: the cache entry directory.
  """
  feature_map: features.FeatureMap
  splits: dict
  stats: dict
  cache_dir: str


def _key_config(data_cfg) -> dict:
  keys = ("dataset", "protocol", "split_fractions", "official_fractions",
          "split_seed", "subsample", "subsample_seed", "label_threshold",
          "drop_neutral", "neutral_rating", "drop_zero_ratings")
  out = {k: data_cfg[k] for k in keys}
  if data_cfg.dataset == "csv":
    out["csv"] = data_cfg.csv.to_dict()
  if data_cfg.dataset == "synthetic":
    out["synthetic"] = data_cfg.synthetic.to_dict()
  out["version"] = PROCESSING_VERSION
  return out


def _synthetic_dir(data_cfg, cache_root: str) -> str:
  spec = data_cfg.synthetic.to_dict()
  key = cache.fingerprint([], {"synthetic": spec, "v": PROCESSING_VERSION})
  final = os.path.join(cache_root, f"raw-synthetic-{key}")
  if not cache.usable(final):
    with cache.atomic_dir(final) as tmp:
      facts = synthetic.generate(tmp, **spec)
      cache.write_json(os.path.join(tmp, "manifest.json"), facts)
  return final


def _split_bounds(n: int, data_cfg) -> dict:
  if data_cfg.protocol == "flip_jax":
    fr = tuple(data_cfg.split_fractions)
  elif data_cfg.protocol == "official":
    fr = tuple(data_cfg.official_fractions)
  else:
    raise ValueError(f"data.protocol {data_cfg.protocol!r}: use 'flip_jax' "
                     "or 'official'")
  if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1) > 1e-6:
    raise ValueError(f"split fractions {fr} must be 3 non-negative numbers "
                     "summing to 1")
  a = int(n * fr[0])
  b = int(n * (fr[0] + fr[1]))
  bounds = {"train": (0, a), "valid": (a, b), "test": (b, n)}
  if fr[1] == 0:
    del bounds["valid"]
  for name, (lo, hi) in bounds.items():
    if hi <= lo:
      raise rawio.DataError(f"{data_cfg.dataset}: split {name!r} is empty "
                            f"({n} rows, fractions {fr})")
  return bounds


def _labels(raw: rawio.RawTable, data_cfg) -> tuple[rawio.RawTable,
                                                     np.ndarray, dict]:
  info = {}
  if data_cfg.dataset == "csv" and data_cfg.csv.label_column:
    return raw, raw.rating.astype(np.float32), {
        "label_rule": f"column {data_cfg.csv.label_column} (0/1)"}
  rule = f"rating >= {data_cfg.label_threshold:g}"
  if data_cfg.drop_neutral:
    if data_cfg.neutral_rating < 0:
      raise ValueError(f"data.drop_neutral: dataset {data_cfg.dataset} has no "
                       "neutral rating (data.neutral_rating = -1)")
    keep = raw.rating != data_cfg.neutral_rating
    info["dropped_neutral"] = int((~keep).sum())
    raw = raw.take(np.flatnonzero(keep))
    rule += f", rating {data_cfg.neutral_rating:g} dropped"
  info["label_rule"] = rule
  return raw, (raw.rating >= data_cfg.label_threshold).astype(np.float32), info


def _build(data_cfg, data_dir: str, cache_dir: str) -> None:
  raw = sources.load_raw(data_cfg, data_dir)
  raw_rows = raw.num_rows
  raw, label, label_info = _labels(raw, data_cfg)
  if raw.timestamp is not None:
    order = np.argsort(raw.timestamp, kind="stable")
    order_rule = "timestamp ascending (stable: ties keep file order)"
  else:
    order = np.random.default_rng(data_cfg.split_seed).permutation(
        raw.num_rows)
    order_rule = (f"no timestamp: random permutation, seed "
                  f"{data_cfg.split_seed}")
  if not 0 < data_cfg.subsample <= 1:
    raise ValueError(f"data.subsample {data_cfg.subsample} not in (0, 1]")
  if data_cfg.subsample < 1:
    k = max(1, int(round(len(order) * data_cfg.subsample)))
    pick = np.sort(np.random.default_rng(data_cfg.subsample_seed).choice(
        len(order), k, replace=False))
    order = order[pick]
    order_rule += (f"; subsample {data_cfg.subsample:g} by index, seed "
                   f"{data_cfg.subsample_seed}")
  raw, label = raw.take(order), label[order]
  if len(np.unique(label)) < 2:
    raise rawio.DataError(f"{data_cfg.dataset}: labels are all "
                          f"{label[0] if len(label) else '-'} under "
                          f"{label_info['label_rule']}; need both classes")
  bounds = _split_bounds(raw.num_rows, data_cfg)
  pre_hi = bounds["valid"][1] if "valid" in bounds else bounds["train"][1]
  split_sizes = {k: hi - lo for k, (lo, hi) in bounds.items()}
  fmap = features.FeatureMap.build(
      raw.field_names, raw.display_names, [k[:pre_hi] for k in raw.keys],
      meta={"dataset": data_cfg.dataset, "protocol": data_cfg.protocol,
            "row_order": order_rule, "label_rule": label_info["label_rule"],
            "split_sizes": split_sizes,
            "count_rows": "train + valid" if "valid" in bounds else "train"})
  ids = fmap.encode(raw.keys)
  text, spans = textify.render(raw.display_names, raw.values)
  ts = (raw.timestamp if raw.timestamp is not None
        else np.full(raw.num_rows, -1, np.int64))
  stats = {"dataset": data_cfg.dataset, "protocol": data_cfg.protocol,
           "raw_rows": raw_rows, "rows": raw.num_rows,
           "num_fields": fmap.num_fields,
           "field_names": list(fmap.field_names),
           "display_names": list(fmap.display_names),
           "vocab_sizes": fmap.vocab_sizes.tolist(),
           "num_features": fmap.num_features,
           "positive_rate": float(label.mean()),
           "row_order": order_rule, **label_info,
           # Suspicious input (kind -> count; rawio.warn, BUILD.md
           # "Reliability policies"); the messages are in raw_info.
           "warnings": dict(raw.info.get("warnings", {})),
           "raw_info": raw.info}
  with cache.atomic_dir(cache_dir) as tmp:
    for name, (lo, hi) in bounds.items():
      y = label[lo:hi]
      if len(np.unique(y)) < 2:
        raise rawio.DataError(f"{data_cfg.dataset}: split {name!r} has only "
                              f"label {y[0]:g}; AUC is undefined")
      stats[f"{name}_rows"] = hi - lo
      stats[f"{name}_positive_rate"] = float(y.mean())
      cache.save_columns(tmp, name, {
          "ids": ids[lo:hi], "label": y,
          "row_id": np.arange(hi - lo, dtype=np.int32),
          "text": text[lo:hi], "spans": spans[lo:hi],
          "timestamp": ts[lo:hi]})
    stats.setdefault("valid_rows", 0)
    fmap.save(os.path.join(tmp, "feature_map.json"))
    cache.write_json(os.path.join(tmp, "stats.json"), stats)
    cache.write_json(os.path.join(tmp, "manifest.json"),
                     {"splits": list(bounds), "columns": list(BASE_COLUMNS),
                      "config": _key_config(data_cfg)})


def load_dataset(data_cfg, cache_root: str) -> PreparedData:
  """Loads a dataset, preparing and caching it on first use.

  Args:
    data_cfg: the `data` ConfigDict (experiments/configs/data.py).
    cache_root: directory of cache entries.

  Returns:
    PreparedData.
  """
  sources.check_dataset(data_cfg.dataset)
  cache_root = os.path.abspath(os.path.expanduser(cache_root))
  data_dir = data_cfg.data_dir
  if data_cfg.dataset == "synthetic":
    data_dir = _synthetic_dir(data_cfg, cache_root)
  files = sources.raw_files(data_cfg, data_dir)
  if not files:
    # Let the reader produce its "missing files" message.
    sources.load_raw(data_cfg, data_dir)
  key = cache.fingerprint(files, _key_config(data_cfg))
  cache_dir = os.path.join(cache_root, f"{data_cfg.dataset}-{key}")
  if cache.usable(cache_dir):
    logging.info("data: reusing cache %s", cache_dir)
  else:
    logging.info("data: preparing %s from %s into %s", data_cfg.dataset,
                 data_dir, cache_dir)
    _build(data_cfg, data_dir, cache_dir)
  manifest = cache.read_json(os.path.join(cache_dir, "manifest.json"))
  splits = {s: cache.load_columns(cache_dir, s, BASE_COLUMNS)
            for s in manifest["splits"]}
  stats = cache.read_json(os.path.join(cache_dir, "stats.json"))
  if stats.get("warnings"):
    logging.warning("data: %s input had suspicious rows %s (details: "
                    "raw_info.warning_messages in %s)", data_cfg.dataset,
                    stats["warnings"], os.path.join(cache_dir, "stats.json"))
  return PreparedData(
      feature_map=features.FeatureMap.load(cache_dir),
      splits=splits,
      stats=stats,
      cache_dir=cache_dir)


def tokenize_dataset(prepared: PreparedData, tokenizer, max_length: int
                     ) -> dict:
  """Tokenizes every split (cached per tokenizer identity and max_length).

  Args:
    prepared: from load_dataset.
    tokenizer: a fast HF tokenizer, or a name/folder for load_tokenizer.
    max_length: L including specials.

  Returns:
    split -> columns: ids, label, row_id (as in prepared.splits) plus
    input_ids int32 [n, L], attention_mask int8 [n, L], token_field int8
    [n, L] (memory-mapped). Tokenisation stats are put in
    prepared.stats['text'].
  """
  if isinstance(tokenizer, str):
    tokenizer = tokenize_lib.load_tokenizer(tokenizer)
  key = cache.fingerprint([], {"tokenizer": tokenize_lib.tokenizer_fingerprint(
      tokenizer), "max_length": max_length, "v": PROCESSING_VERSION})
  tok_dir = os.path.join(prepared.cache_dir, f"tok-{key}")
  if not cache.usable(tok_dir):
    with cache.atomic_dir(tok_dir) as tmp:
      all_stats = {}
      for name, cols in prepared.splits.items():
        out, st = tokenize_lib.tokenize_texts(tokenizer, cols["text"],
                                              cols["spans"], max_length)
        cache.save_columns(tmp, name, out)
        all_stats[name] = st
      merged = {
          "max_length": max_length,
          "tokenizer": tokenize_lib.tokenizer_fingerprint(tokenizer),
          "truncated_rows": sum(s["truncated_rows"] for s in
                                all_stats.values()),
          "truncated_fields": sum(s["truncated_fields"] for s in
                                  all_stats.values()),
          "max_text_tokens": max(s["max_text_tokens"] for s in
                                 all_stats.values()),
          "per_split": all_stats}
      cache.write_json(os.path.join(tmp, "stats.json"), merged)
      cache.write_json(os.path.join(tmp, "manifest.json"),
                       {"columns": list(TOKEN_COLUMNS)})
  prepared.stats["text"] = cache.read_json(os.path.join(tok_dir, "stats.json"))
  out = {}
  for name, cols in prepared.splits.items():
    tok = cache.load_columns(tok_dir, name, TOKEN_COLUMNS, mmap=True)
    out[name] = {"ids": cols["ids"], "label": cols["label"],
                 "row_id": cols["row_id"], **tok}
  return out
