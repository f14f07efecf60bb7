"""FLOPs per candidate and throughput of the CTR models (spec B5, B7.6).

*efficiency-FLOPs*: the compiled predict at batch 1 (one user, one
candidate: everything is paid per sample). *inference-FLOPs*: the compiled
folded predict of one request, 1 user x C candidates (C = 100), per
candidate (encoder and queries once per user). Also: the unfolded predict
at batch C per candidate (every row re-encodes its user) and the median
candidates/s of both forms. FLOPs are XLA's cost analysis of the lowered
program (the compiled one's where the lowered has none). Random weights and
full-length histories (FLOPs depend on neither).
"""
from __future__ import annotations

import statistics
import time

import jax
import numpy as np
from flax import linen as nn

from flip_jax.methods.srp4ctr import model as model_lib
from flip_jax.xla_cost import cost_flops


def request(cfg, users: int, candidates: int, seed: int = 0) -> dict:
  """Random full histories and candidates: hist [U, L, A], ids [U, C, F]."""
  rs = np.random.RandomState(seed)
  seq, c = cfg.seq, cfg.ctr
  hist = np.stack([rs.randint(2, v, size=(users, seq.max_length))
                   for v in seq.vocab_sizes], -1).astype(np.int32)
  return {"hist": hist,
          "hist_mask": np.ones((users, seq.max_length), np.int32),
          "ids": rs.randint(0, c.num_features, size=(users, candidates,
                                                     c.num_fields)
                            ).astype(np.int32),
          "target": np.stack([rs.randint(2, seq.vocab_sizes[a],
                                         size=(users, candidates))
                              for a in seq.item_attributes], -1
                             ).astype(np.int32)}


def _rows(req) -> dict:
  """A request as unfolded rows (the user's history repeated per row)."""
  c = req["ids"].shape[1]
  return {"hist": np.repeat(req["hist"], c, 0),
          "hist_mask": np.repeat(req["hist_mask"], c, 0),
          "ids": req["ids"][0], "target": req["target"][0]}


def _flops_and_time(fn, variables, batch, repeats: int):
  lowered = jax.jit(fn).lower(variables, batch)
  compiled = lowered.compile()
  flops = cost_flops(lowered, compiled)
  jax.block_until_ready(compiled(variables, batch))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(compiled(variables, batch))
    times.append(time.perf_counter() - t)
  return flops, statistics.median(times)


def measure(cfg, *, candidates: int = 100, repeats: int = 20) -> dict:
  """The FLOPs and throughput of one model config (module docstring)."""
  model = model_lib.Srp4ctrModel(cfg)
  req = request(cfg, 1, candidates)
  one = {k: v[:1] for k, v in _rows(req).items()}
  variables = nn.meta.unbox(jax.jit(lambda r: model.init(
      {"params": r, "dropout": r}, one))(jax.random.PRNGKey(0)))
  predict = lambda v, b: model.apply(v, b)["logit"]
  folded = lambda v, b: model.apply(v, b, method=model.folded)["logit"]
  f1, _ = _flops_and_time(predict, variables, one, 1)
  fu, tu = _flops_and_time(predict, variables, _rows(req), repeats)
  ff, tf = _flops_and_time(folded, variables, req, repeats)
  return {"efficiency_flops": f1,
          "inference_flops_per_candidate": ff / candidates,
          "unfolded_flops_per_candidate": fu / candidates,
          "folded_candidates_per_sec": candidates / tf,
          "unfolded_candidates_per_sec": candidates / tu,
          "params": int(sum(np.size(x) for x in jax.tree.leaves(
              variables["params"]))),
          "candidates": candidates,
          "device": jax.devices()[0].device_kind}


def run(configs: dict, candidates: int = 100, repeats: int = 20) -> dict:
  """{name: measure(config)}; with a 'din' entry, each model's ratios to
  DIN's FLOPs too."""
  out = {name: measure(cfg, candidates=candidates, repeats=repeats)
         for name, cfg in configs.items()}
  base = out.get("din")
  for r in out.values() if base else ():
    for k in ("efficiency_flops", "inference_flops_per_candidate"):
      r[f"{k}_vs_din"] = r[k] / base[k]
  return out
