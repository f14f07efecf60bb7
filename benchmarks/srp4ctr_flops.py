r"""FLOPs per candidate and throughput: SRP4CTR vs DIN vs the backbone.

  python -m benchmarks.srp4ctr_flops --preset=full --out=runs/srp4ctr_flops.json

Spec B5 / B7.6, measured by `flip_jax.methods.srp4ctr.flops`:
*efficiency-FLOPs* = the compiled predict at batch 1; *inference-FLOPs* =
the compiled folded predict of 1 user x 100 candidates, per candidate; also
the unfolded batch-100 FLOPs per candidate and candidates/s of both forms.
The models have the preset's sizes (experiments/configs/srp4ctr_ctr.py) and
ML-1M-like vocabularies with random weights (FLOPs do not depend on them);
`run_all --method=srp4ctr` measures the run's own data instead (stage
`flops`). Prints a table and one ``BENCH {json}`` line per model.
"""
from __future__ import annotations

import json

from absl import app
from absl import flags

from experiments.configs import srp4ctr_ctr
from flip_jax.methods.srp4ctr import data as data_lib
from flip_jax.methods.srp4ctr import fgbert
from flip_jax.methods.srp4ctr import flops
from flip_jax.methods.srp4ctr import model as model_lib
from flip_jax.models import ctr as ctr_lib


def _define_flags():
  """The script's flags (defined only when run as a script, so importing
  this module, e.g. from the workflow, defines none)."""
  flags.DEFINE_enum("preset", "full", ["tiny", "cpu-small", "full"],
                    "Model sizes (the SRP4CTR configs' presets).")
  flags.DEFINE_string("ctr", "dcnv2", "CTR backbone.")
  flags.DEFINE_integer("candidates", 100, "Candidates per request.")
  flags.DEFINE_integer("repeats", 20, "Timed calls per form.")
  flags.DEFINE_string("out", "", "Also write the results as JSON here.")

# ML-1M-like sizes: items, first genres, title years, feedback; 8 fields.
ML1M_VOCAB = (3708 + 2, 18 + 2, 81 + 2, 4)
ML1M_FEATURES, ML1M_FIELDS = 3708 + 6040 + 3708 + 3439 + 50, 8
VARIANTS = {"srp4ctr": "srp4ctr", "din": "din", "backbone": "backbone"}


def model_configs(preset: str, ctr: str = "dcnv2", vocab=ML1M_VOCAB,
                  attributes=None, item_attributes=(0, 1, 2),
                  num_features: int = ML1M_FEATURES,
                  num_fields: int = ML1M_FIELDS, overrides=None) -> dict:
  """{name: ModelConfig} of SRP4CTR, DIN and the backbone at a preset.

  ``attributes`` default to the config's (ML's four, matching
  ``ML1M_VOCAB``); ``overrides``: fn(config) -> config applied to each CTR
  config (the workflow's --set values).
  """
  out = {}
  for name, variant in VARIANTS.items():
    cfg = srp4ctr_ctr.get_config(f"dataset=ml-1m,preset={preset},"
                                 f"variant={variant},ctr={ctr}")
    if overrides is not None:
      cfg = overrides(cfg)
    seq = fgbert.SeqConfig(
        block=data_lib.block_config(cfg.model), num_layers=cfg.model.seq.layers,
        attributes=tuple(attributes or cfg.sequence.attributes),
        vocab_sizes=tuple(vocab), item_attributes=tuple(item_attributes),
        max_length=cfg.sequence.max_length)
    s = cfg.srp4ctr
    out[name] = model_lib.ModelConfig(
        ctr=ctr_lib.CTRConfig.from_config(
            cfg.model.ctr, num_features, num_fields,
            num_extra_fields=model_lib.extra_fields(s)),
        seq=seq, sequence=s.sequence, cross_attention=s.cross_attention,
        num_queries=s.num_queries, query_layers=s.query_layers,
        din_hidden=tuple(s.din.hidden), din_act=s.din.act)
  return out


def main(argv):
  del argv
  f = flags.FLAGS
  out = flops.run(model_configs(f.preset, f.ctr), f.candidates, f.repeats)
  print(f"{'model':10s} {'eff. MFLOP':>11s} {'inf. MFLOP/cand':>16s} "
        f"{'unfolded':>9s} {'folded c/s':>11s} {'unfolded c/s':>13s}")
  for name, r in out.items():
    print(f"{name:10s} {r['efficiency_flops'] / 1e6:11.2f} "
          f"{r['inference_flops_per_candidate'] / 1e6:16.3f} "
          f"{r['unfolded_flops_per_candidate'] / 1e6:9.2f} "
          f"{r['folded_candidates_per_sec']:11.0f} "
          f"{r['unfolded_candidates_per_sec']:13.0f}")
    print("BENCH " + json.dumps({"bench": "srp4ctr_flops", "model": name,
                                 "preset": f.preset, **r}))
  if f.out:
    with open(f.out, "w") as fh:
      json.dump(out, fh, indent=1)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
