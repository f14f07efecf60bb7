r"""The loop's state initialisation, A/B by code folder (e.g. two commits).

  git worktree add <folder> <commit>
  python -m benchmarks.state_init_ab --variant=base=<folder> \
      --variant=this=. --sizes=minilm-l6,bert-base         # 3 rounds
  python -m benchmarks.state_init_ab ... --cache=warm     # a rerun's init

What every run of the shared loop pays before its first step: the sharded
state initialiser (`flip_jax.train.init.sharded_state_init`: the model's
init traced for shapes and shardings) and its first call (trace, lower and
compile of the jitted init, or a load from the compilation cache, then the
init itself). The model is FLIP's pretraining model (DCNv2 over 8 fields of
500 ids, the projection, MLM and MTM heads) around a BERT of the named size
with random weights, on `benchmarks.pretrain_step`'s synthetic batch (8
rows of 32 tokens; made here and handed to the children as a file, so a
variant needs only its `flip_jax`). Each measurement is a fresh CPU process
with the variant's folder first on ``PYTHONPATH`` and, by ``--cache``, no
compilation cache or one per variant and size, filled by an unmeasured run
first. Variants run interleaved, in a rotated order per round. Prints each
measurement, then the medians.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from benchmarks import compile_flags
from benchmarks import pretrain_step
from benchmarks import startup_ab

# name: (layers, hidden size, heads): the BERTs FLIP is run with.
SIZES = {"tiny": (2, 64, 2), "minilm-l6": (6, 384, 12),
         "bert-base": (12, 768, 12)}
VOCAB, MASK_ID, ROWS, LENGTH = 30522, 103, 8, 32

_CHILD = r"""
import json, sys, time
layers, hidden, heads = (int(x) for x in sys.argv[1:4])
import jax, numpy as np, optax
from flax import linen as nn
from flip_jax import compile_cache, sharding, sharding_rules
compile_cache.setup(sys.argv[4])
from flip_jax.methods.flip import pretrain as flip_task
from flip_jax.methods.flip import pretrain_model as flip_lib
from flip_jax.models import ctr
from flip_jax.models.plm import config as plm_config
from flip_jax.train import init as init_lib
from flip_jax.train import state as state_lib
with np.load(sys.argv[5]) as f:
  arrays = dict(f)
consts = {"log_q": arrays.pop("log_q")}
fields, n = arrays["ids"].shape[1], consts["log_q"].shape[0]
plm = plm_config.PLMConfig(
    model_type="bert", vocab_size=int(sys.argv[6]), hidden_size=hidden,
    num_layers=layers, num_heads=heads, intermediate_size=4 * hidden,
    max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12,
    pad_token_id=0, hidden_dropout=0.1, attention_dropout=0.1,
    hidden_act="gelu", initializer_range=0.02)
model = flip_lib.FlipPretrainModel(flip_lib.FlipConfig(
    ctr=ctr.CTRConfig(name="dcnv2", num_features=n, num_fields=fields),
    plm=plm, num_features=n, num_fields=fields))
task = flip_task.FlipPretrainTask(None, model)
tx = optax.adamw(1e-4, weight_decay=1e-3)
mesh, rules = sharding.make_mesh(), sharding_rules.DEFAULT_RULES
t0 = time.perf_counter()
init = init_lib.sharded_state_init(
    lambda rng: task.init_variables(rng, arrays, consts),
    lambda p, ms, r: state_lib.create_train_state(p, tx, r, ms),
    tx, mesh, rules)
t1 = time.perf_counter()
with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
  state = jax.block_until_ready(init.init(state_lib.new_key(0)))
t2 = time.perf_counter()
print(json.dumps({"sharded_state_init": t1 - t0, "first_init": t2 - t1,
                  "total": t2 - t0}))
"""


def run_once(folder: str, size: str, cache: str, batch: str
             ) -> dict[str, float]:
  """The child's seconds in a fresh process with ``folder`` first on
  PYTHONPATH, the model of ``size``, the compilation cache ``cache`` (a
  folder, or 'off') and the batch file ``batch``."""
  env = startup_ab.folder_first_env(folder)
  proc = subprocess.run(
      [sys.executable, "-c", _CHILD, *map(str, SIZES[size]), cache, batch,
       str(VOCAB)],
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
  folders = startup_ab.variant_folders(parser, args.variant, empty_ok=False,
                                       holds="flip_jax")
  sizes = args.sizes.split(",")
  for size in sizes:
    if size not in SIZES:
      parser.error(f"--sizes: {size!r} is not one of {', '.join(SIZES)}")
  with tempfile.TemporaryDirectory() as tmp:
    batch = os.path.join(tmp, "batch.npz")
    example, consts = pretrain_step.synthetic_batch(ROWS, LENGTH, VOCAB,
                                                    MASK_ID)
    np.savez(batch, **example, **consts)
    for size in sizes:
      caches = {label: "off" if args.cache == "off"
                else os.path.join(tmp, f"{label}-{size}") for label in folders}
      def run(label, size=size, caches=caches):
        return run_once(folders[label], size, caches[label], batch)
      if args.cache == "warm":
        for label in folders:
          run(label)
      times = compile_flags.interleaved(list(folders), args.rounds, run,
                                        label=f"{size} ")
      compile_flags.print_medians(
          f"{size}: medians over {args.rounds} rounds:", times)


if __name__ == "__main__":
  main()
