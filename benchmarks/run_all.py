r"""Runs every benchmark and prints one table (the `make bench` target).

  python -m benchmarks.run_all            # quick settings (about 15-25 min on 2 CPU cores)
  python -m benchmarks.run_all --full     # the settings quoted in the closing notes

Each script runs in its own process and prints its own detailed table; the
`BENCH {json}` lines they emit are collected into the summary: examples/s,
GFLOP/s and the fraction of the measured float32 matmul peak on the current
device.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

QUICK = {
    "data_pipeline": ["--dataset=synthetic", "--steps=100", "--workers=0"],
    "plm_step": ["--runs=3", "--steps=1"],
    "ctr_train": ["--throughput_only"],
    # The official form needs > 24 GB at batch 128 unless micro-batched.
    "pretrain_step": ["--runs=3", "--steps=2", "--forms=fast,fast/mb16"],
    "finetune_step": ["--runs=3", "--steps=2", "--modes=joint,joint/mb4"],
    "losses_bench": [],
}
FULL = {
    "data_pipeline": [],
    "plm_step": [],
    "ctr_train": [],
    "pretrain_step": ["--forms=fast,fast/mb8,fast/mb16,official/mb16"],
    "finetune_step": ["--modes=id,plm,joint,joint/mb4"],
    "losses_bench": [],
}


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--full", action="store_true")
  ap.add_argument("--only", default="", help="comma-separated script names")
  args = ap.parse_args()
  plan = FULL if args.full else QUICK
  only = [s for s in args.only.split(",") if s]
  rows = []
  for name, extra in plan.items():
    if only and name not in only:
      continue
    cmd = [sys.executable, "-m", f"benchmarks.{name}", *extra]
    print(f"\n$ {' '.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    out = proc.stdout
    print("\n".join(l for l in out.splitlines() if not l.startswith("BENCH ")))
    if proc.returncode:
      print(f"[{name} failed]\n{proc.stderr[-2000:]}")
    rows += [json.loads(l[6:]) for l in out.splitlines()
             if l.startswith("BENCH ")]
  print(f"\n{'benchmark':<34}{'examples/s':>12}{'GFLOP/s':>9}{'% peak':>8}"
        f"  device")
  for r in rows:
    gf = r.get("gflops_per_s")
    fp = r.get("frac_peak")
    print(f"{r['bench']:<34}{r.get('examples_per_s', float('nan')):>12.1f}"
          f"{'' if gf is None else f'{gf:.0f}':>9}"
          f"{'' if fp is None else f'{100 * fp:.0f}%':>8}  {r.get('device', '')}")


if __name__ == "__main__":
  main()
