r"""Why several CPU devices cache programs without collectives only.

  python -m benchmarks.cpu_cache_collectives            # 1 and 8 devices
  python -m benchmarks.cpu_cache_collectives --devices=8 --steps=4

For each device count, a tiny FLIP pretraining (synthetic data, MiniLM cut
to one layer, `--steps` steps) runs twice in fresh processes sharing one
empty JAX compilation cache folder turned on directly through jax.config
(past `flip_jax.compile_cache.check_backend`, which would keep it for
the programs without collectives only):
the first run compiles and writes, the second loads. Prints, per run, the
exit status, the wall time and how many XLA "may be stuck" rendezvous
warnings it logged. With jax 0.10.2 on this project's 2-core machine, the
8-device warm run hangs in XLA:CPU's collectives and aborts (status -6 /
134) while the 1-device runs and the cold runs pass; see RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

_CHILD = r"""
import os, sys, json
import jax
jax.config.update("jax_enable_compilation_cache", True)
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
from experiments.configs import flip_pretrain
from experiments import stages
from flip_jax import methods
from flip_jax.train import loop
cfg = flip_pretrain.get_config("dataset=synthetic,preset=tiny")
stages.apply_overrides(cfg, {
    "model.plm.num_layers": "1", "data.cache_dir": sys.argv[2] + "/data",
    "train.max_steps": sys.argv[3], "ckpt.every_steps": sys.argv[3],
    "ckpt.async_save": "False"})
loop.train_and_evaluate(cfg, sys.argv[2] + "/run", methods.make_task(cfg))
print("finished")
"""


def run_child(devices: int, cache: str, work: str, steps: int,
              timeout_s: int) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="0",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  start = time.perf_counter()
  try:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, cache, work, str(steps)], env=env,
        capture_output=True, text=True, timeout=timeout_s, check=False)
    rc, log = proc.returncode, proc.stdout + proc.stderr
  except subprocess.TimeoutExpired as e:
    rc, log = "timeout", (e.stderr or b"").decode(errors="replace")
  return {"rc": rc, "wall_s": round(time.perf_counter() - start, 1),
          "stuck_warnings": log.count("may be stuck"),
          "finished": "finished" in log}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--devices", default="1,8")
  parser.add_argument("--steps", type=int, default=4)
  parser.add_argument("--timeout_s", type=int, default=300)
  args = parser.parse_args()
  for devices in [int(d) for d in args.devices.split(",")]:
    with tempfile.TemporaryDirectory(prefix="cc_repro_") as root:
      cache = os.path.join(root, "jit")
      for attempt in ("cold", "warm"):
        work = os.path.join(root, attempt)
        out = run_child(devices, cache, work, args.steps, args.timeout_s)
        print(json.dumps({"devices": devices, "run": attempt, **out}),
              flush=True)


if __name__ == "__main__":
  main()
