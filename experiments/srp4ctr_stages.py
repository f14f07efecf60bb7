"""SRP4CTR's own stage code and report pieces (its spec is
``experiments.srp4ctr_workflow``): the ``prepare`` stage with the sequence
statistics, the run-level ``flops`` stage, the FLOPs verdict (spec B8) and
the FLOPs table of the report."""
from __future__ import annotations

import os

import jax
import numpy as np

from flip_jax import jsonio

# "Far less": SRP4CTR's extra inference-FLOPs per candidate over DIN's are
# at most this fraction of its extra efficiency-FLOPs [flip_jax].
FAR_LESS = 0.5


def prepare(workdir, cfg) -> dict:
  """Data and sequence statistics; the samples parquet for inspection."""
  # pylint: disable=g-import-not-at-top
  from flip_jax.data import sequence_samples
  from flip_jax.data import sequences
  from flip_jax.methods.srp4ctr import data as data_lib
  # pylint: enable=g-import-not-at-top
  out = os.path.join(workdir, "data")
  os.makedirs(out, exist_ok=True)
  prepared, store = data_lib.load_store(cfg, workdir)
  stats = {"tie_rule": sequences.TIE_RULE, "users": store.num_users,
           "events": int(len(store.tokens)),
           "attributes": list(store.attributes),
           "vocab_sizes": store.vocab_sizes.tolist()}
  for split, cols in store.splits.items():
    n = cols["hist_end"] - cols["hist_begin"]
    stats[split] = {"rows": int(len(n)), "mean_history": float(n.mean()),
                    "median_history": float(np.median(n)),
                    "empty_history": float((n == 0).mean()),
                    f"at_least_{cfg.sequence.max_length}": float(
                        (n >= cfg.sequence.max_length).mean())}
  if jax.process_index() == 0:
    prepared.feature_map.save(os.path.join(out, "feature_map.json"))
    jsonio.write_json_atomic(os.path.join(out, "stats.json"), prepared.stats)
    sequence_samples.write_samples(
        prepared, sequences.SequenceSpec(cfg.sequence.user_field,
                                         cfg.sequence.item_field, ("item",)),
        os.path.join(out, "sequences.parquet"), cfg.sequence.max_length)
    jsonio.write_json_atomic(os.path.join(out, "sequences.json"), stats)
  return stats


def flops(workdir, out, configs) -> dict:
  """`flip_jax.methods.srp4ctr.flops` of the run's models on its data."""
  # pylint: disable=g-import-not-at-top
  from flip_jax.methods.srp4ctr import data as data_lib
  from flip_jax.methods.srp4ctr import finetune
  from flip_jax.methods.srp4ctr import flops as flops_lib
  # pylint: enable=g-import-not-at-top
  models = {}
  for name, cfg in configs.items():
    cfg = finetune.resolve_config(cfg)
    prepared, store = data_lib.load_store(cfg, workdir)
    models[name] = finetune.build_model(cfg, store,
                                        prepared.feature_map).config
  res = flops_lib.run(models)
  if jax.process_index() == 0:
    jsonio.write_json_atomic(out, res)
  return res


def flops_verdict(counts: dict | None) -> dict | None:
  """B8: inference-FLOPs per candidate grow far less than efficiency-FLOPs
  (both relative to DIN)."""
  if not counts or "srp4ctr" not in counts or "din" not in counts:
    return None
  s, d = counts["srp4ctr"], counts["din"]
  eff = s["efficiency_flops"] / d["efficiency_flops"] - 1
  inf = (s["inference_flops_per_candidate"]
         / d["inference_flops_per_candidate"] - 1)
  holds = bool(inf <= FAR_LESS * eff) if eff > 0 else False
  return {"claim": "inference-FLOPs per candidate grow far less than "
                   "efficiency-FLOPs (vs DIN, B8)", "holds": holds,
          # A count, not a trained quantity: no budget to wait for.
          "verdict": "holds" if holds else "contradicted",
          "efficiency_flops_growth": eff, "inference_flops_growth": inf}


def verdict_line(fv: dict) -> str:
  return (f"- {fv['claim']}: {fv['verdict']} (efficiency "
          f"{100 * fv['efficiency_flops_growth']:+.0f}%, inference "
          f"{100 * fv['inference_flops_growth']:+.0f}% per candidate)")


def flops_table(counts: dict | None) -> list[str]:
  """The report's FLOPs section (none without a ``flops`` stage)."""
  if not counts:
    return []
  return (["## FLOPs per candidate (1 user x 100 candidates) and batch 1",
           "", "| model | efficiency MFLOP | inference MFLOP/cand | folded "
           "cand/s | unfolded cand/s |", "|---|---|---|---|---|"]
          + [f"| {k} | {v['efficiency_flops'] / 1e6:.2f} | "
             f"{v['inference_flops_per_candidate'] / 1e6:.3f} | "
             f"{v['folded_candidates_per_sec']:.0f} | "
             f"{v['unfolded_candidates_per_sec']:.0f} |"
             for k, v in counts.items()] + [""])
