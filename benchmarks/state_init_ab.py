r"""The loop's state initialisation, A/B by code folder (e.g. two commits).

  git worktree add /tmp/base <commit>
  python -m benchmarks.state_init_ab --variant=base=/tmp/base \
      --variant=this=. --sizes=minilm-l6,bert-base         # 3 rounds
  python -m benchmarks.state_init_ab ... --cache=warm     # a rerun's init

What every run of the shared loop pays before its first step: the sharded
state initialiser (`flip_jax.train.init.sharded_state_init`: the model's
init traced for shapes and shardings) and its first call (trace, lower and
compile of the jitted init, or a load from the compilation cache, then the
init itself). The model is FLIP's pretraining model (DCNv2 over 8 fields of
500 ids, the projection, MLM and MTM heads) around a BERT of the named size
with random weights. Each measurement is a fresh CPU process with the
variant's folder first on ``PYTHONPATH`` and, by ``--cache``, no
compilation cache or one per variant and size, filled by an unmeasured run
first. Variants run interleaved, in a rotated order per round. Prints each
measurement, then the medians.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

from benchmarks import compile_flags

REPO = pathlib.Path(__file__).resolve().parents[1]

# name: (layers, hidden size, heads): the BERTs FLIP is run with.
SIZES = {"tiny": (2, 64, 2), "minilm-l6": (6, 384, 12),
         "bert-base": (12, 768, 12)}

_CHILD = r"""
import json, sys, time
layers, hidden, heads = (int(x) for x in sys.argv[1:4])
import jax, numpy as np, optax
from flax import linen as nn
from flip_jax import compile_cache, noise, sharding
compile_cache.setup(sys.argv[4])
from flip_jax.methods.flip import pretrain as flip_task
from flip_jax.methods.flip import pretrain_model as flip_lib
from flip_jax.models import ctr
from flip_jax.models.plm import config as plm_config
from flip_jax.train import init as init_lib
from flip_jax.train import state as state_lib
fields, size, batch, length = 8, 500, 8, 32
n = fields * size
plm = plm_config.PLMConfig(
    model_type="bert", vocab_size=30522, hidden_size=hidden,
    num_layers=layers, num_heads=heads, intermediate_size=4 * hidden,
    max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12,
    pad_token_id=0, hidden_dropout=0.1, attention_dropout=0.1,
    hidden_act="gelu", initializer_range=0.02)
model = flip_lib.FlipPretrainModel(flip_lib.FlipConfig(
    ctr=ctr.CTRConfig(name="dcnv2", num_features=n, num_fields=fields),
    plm=plm, num_features=n, num_fields=fields))
task = flip_task.FlipPretrainTask(None, model)
rs = np.random.RandomState(0)
ids = (np.arange(fields) * size + rs.randint(2, size, (batch, fields))
       ).astype(np.int32)
tokens = rs.randint(1000, 30522, (batch, length)).astype(np.int32)
pos = rs.randint(0, fields, (batch, 1)).astype(np.int32)
labels = np.full((batch, length), -100, np.int32)
labels[:, 3:6] = tokens[:, 3:6]
example = {"ids": ids, "input_ids": tokens,
           "attention_mask": np.ones((batch, length), np.int32),
           "mtm_ids": ids, "mtm_positions": pos,
           "mtm_labels": np.take_along_axis(ids, pos, 1),
           "mtm_weight": np.ones((batch, 1), np.float32),
           "mlm_input_ids": tokens, "mlm_labels": labels}
consts = {"log_q": np.asarray(noise.noise_log_probs(
    rs.randint(1, 100, n).astype(np.float64)), np.float32)}
tx = optax.adamw(1e-4, weight_decay=1e-3)
mesh, rules = sharding.make_mesh(), sharding.DEFAULT_RULES
t0 = time.perf_counter()
init = init_lib.sharded_state_init(
    lambda rng: task.init_variables(rng, example, consts),
    lambda p, ms, r: state_lib.create_train_state(p, tx, r, ms),
    tx, mesh, rules)
t1 = time.perf_counter()
with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
  state = jax.block_until_ready(init.init(state_lib.new_key(0)))
t2 = time.perf_counter()
print(json.dumps({"sharded_state_init": t1 - t0, "first_init": t2 - t1,
                  "total": t2 - t0}))
"""


def run_once(folder: str, size: str, cache: str) -> dict[str, float]:
  """The child's seconds in a fresh process with ``folder`` first on
  PYTHONPATH, the model of ``size`` and the compilation cache ``cache``
  (a folder, or 'off')."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (folder, env.get("PYTHONPATH", "")) if p)
  proc = subprocess.run(
      [sys.executable, "-c", _CHILD, *map(str, SIZES[size]), cache],
      cwd=folder, env=env, capture_output=True, text=True, check=False)
  if proc.returncode:
    raise RuntimeError(f"{folder} {size} failed:\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--sizes", default="minilm-l6,bert-base",
                      help=f"comma-separated, of {', '.join(SIZES)}")
  parser.add_argument("--cache", choices=("off", "warm"), default="off",
                      help="off: every init compiles; warm: each variant "
                           "and size loads from its own compilation cache, "
                           "filled by one unmeasured run first (a rerun, "
                           "another seed or stage)")
  parser.add_argument("--variant", action="append", required=True,
                      help="label=folder (a checkout of this repository); "
                           "repeat")
  args = parser.parse_args()
  folders = {}
  for v in args.variant:
    label, _, folder = v.partition("=")
    if not folder or not os.path.isdir(os.path.join(folder, "flip_jax")):
      parser.error(f"--variant={v}: want label=folder, the folder a "
                   "checkout of this repository")
    folders[label] = os.path.abspath(folder)
  sizes = args.sizes.split(",")
  for size in sizes:
    if size not in SIZES:
      parser.error(f"--sizes: {size!r} is not one of {', '.join(SIZES)}")
  with tempfile.TemporaryDirectory() as tmp:
    for size in sizes:
      caches = {label: "off" if args.cache == "off"
                else os.path.join(tmp, f"{label}-{size}") for label in folders}
      if args.cache == "warm":
        for label in folders:
          run_once(folders[label], size, caches[label])
      _report(size, args.rounds, compile_flags.interleaved(
          list(folders), args.rounds,
          lambda label, size=size, caches=caches: run_once(
              folders[label], size, caches[label]),
          label=f"{size} "))


def _report(size: str, rounds: int, times) -> None:
  """The medians of each variant's measurements."""
  print(f"\n{size}: medians over {rounds} rounds:")
  for label, outs in times.items():
    med = compile_flags.medians(outs)
    print(f"  {label}: " + ", ".join(f"{k} {t:.2f} s"
                                     for k, t in med.items()))
  print()


if __name__ == "__main__":
  main()
