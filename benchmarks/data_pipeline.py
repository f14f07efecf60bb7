"""Data-layer benchmark: raw -> cache preparation and batch throughput.

  python -m benchmarks.data_pipeline                       # ML-1M (shared)
  python -m benchmarks.data_pipeline --dataset=synthetic --workers=0,1,2

Measures, on this machine:
  * raw -> processed cache (parse, label, sort, split, vocab, text) time;
  * tokenisation time (MiniLM WordPiece, L = max_length) into the cache;
  * reloading both from the cache;
  * examples/s of the grain pipeline yielding tokenized + masked training
    batches (FLIP masks, batch 128, L 100), with and without workers.
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
import time

from absl import app
from absl import flags

from experiments.configs import data as data_config
from flip_jax.data import masking
from flip_jax.data import pipeline
from flip_jax.data import prepare
from flip_jax.data import tokenize as tokenize_lib

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DATASET = flags.DEFINE_string("dataset", "ml-1m", "dataset key")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", os.path.join(os.path.dirname(_ROOT), "shared", "data", "ml-1m"),
    "raw data directory (ignored for synthetic)")
_BATCH = flags.DEFINE_integer("batch_size", 128, "global batch size")
_MAX_LENGTH = flags.DEFINE_integer("max_length", 100, "text length L")
_STEPS = flags.DEFINE_integer("steps", 300, "timed batches per setting")
_WORKERS = flags.DEFINE_list("workers", ["0", "2"], "worker counts to time")


def _cpu_name() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown CPU"


def _timed(fn):
  t0 = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - t0


def main(argv):
  del argv
  cfg = data_config.get_data_config(_DATASET.value)
  if _DATASET.value != "synthetic":
    cfg.data_dir = _DATA_DIR.value
  cfg.max_length = _MAX_LENGTH.value
  rows, bench = [], []
  with tempfile.TemporaryDirectory() as cache_root:
    prepared, t_prep = _timed(lambda: prepare.load_dataset(cfg, cache_root))
    n = prepared.stats["rows"]
    rows.append(("raw -> cache (parse/split/vocab/text)", f"{t_prep:.2f} s",
                 f"{n / t_prep:,.0f} rows/s"))
    tok, t_tok_load = _timed(lambda: tokenize_lib.load_tokenizer(
        cfg.tokenizer))
    cols, t_tok = _timed(lambda: prepare.tokenize_dataset(
        prepared, tok, cfg.max_length))
    rows.append(("tokenize -> cache (MiniLM, L=%d)" % cfg.max_length,
                 f"{t_tok:.2f} s", f"{n / t_tok:,.0f} rows/s"))
    _, t_reload = _timed(lambda: prepare.tokenize_dataset(
        prepare.load_dataset(cfg, cache_root), tok, cfg.max_length))
    rows.append(("reload both from cache", f"{t_reload:.2f} s", ""))
    mcfg = masking.MaskingConfig.from_config(cfg)
    for w in [int(x) for x in _WORKERS.value]:
      it = pipeline.train_iterator(
          cols["train"], global_batch_size=_BATCH.value, seed=0,
          masking=mcfg, mask_token_id=tok.mask_token_id,
          feature_map=prepared.feature_map, process_index=0,
          process_count=1, worker_count=w)
      _, t_first = _timed(lambda: next(it))  # noqa: B023
      for _ in range(10):
        next(it)
      t0 = time.perf_counter()
      for _ in range(_STEPS.value):
        next(it)
      dt = time.perf_counter() - t0
      rows.append((f"train batches, masked, workers={w}",
                   f"{_BATCH.value * _STEPS.value / dt:,.0f} ex/s",
                   f"first batch {t_first:.2f} s"))
      bench.append({"bench": f"data_pipeline/workers={w}",
                    "examples_per_s": _BATCH.value * _STEPS.value / dt,
                    "device": "host CPU"})
      it.close()  # stops grain workers cleanly
  path = prepared.stats["text"]["per_split"]["train"]["tokenize_path"]
  print(f"\ndataset {cfg.dataset}: {n:,} rows, "
        f"{prepared.stats['train_rows']:,} train; batch {_BATCH.value}, "
        f"L {cfg.max_length}; tokenizer load {t_tok_load:.2f} s; "
        f"tokenize path {path}")
  print(f"device: host CPU, {os.cpu_count()} cores, {_cpu_name()} "
        "(the data pipeline runs on the host)")
  width = max(len(r[0]) for r in rows)
  print(f"{'stage':{width}s}  {'time / rate':>16s}  note")
  for name, value, note in rows:
    print(f"{name:{width}s}  {value:>16s}  {note}")
  for row in bench:
    print("BENCH " + json.dumps(row))


if __name__ == "__main__":
  app.run(main)
