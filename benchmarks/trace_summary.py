r"""Summarises a jax.profiler perfetto trace: where the device time goes.

  python -m benchmarks.trace_summary <trace dir or perfetto_trace.json.gz> [--top=25]

Sums event durations per name on the device threads (GPU streams; on CPU,
the XLA op threads), and prints the top names with their share, plus the
total busy time against the wall span of the trace.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os


def load(path: str) -> dict:
  if os.path.isdir(path):
    found = sorted(glob.glob(os.path.join(path, "**", "*.json.gz"),
                             recursive=True))
    if not found:
      raise SystemExit(f"{path}: no *.json.gz trace under it")
    path = found[-1]
  with gzip.open(path, "rt") as f:
    return json.load(f)


def summarise(trace: dict, top: int = 25) -> str:
  events = trace.get("traceEvents", trace if isinstance(trace, list) else [])
  pnames = {e["pid"]: e["args"].get("name", "") for e in events
            if e.get("ph") == "M" and e.get("name") == "process_name"}
  dev_pids = {p for p, n in pnames.items()
              if "/device:" in n and "CPU" not in n.upper().split("/device:")[-1][:4]}
  if not dev_pids:  # CPU-only trace: the XLA host op threads
    dev_pids = set(pnames)
  per = collections.Counter()
  count = collections.Counter()
  lo, hi = float("inf"), 0.0
  for e in events:
    if e.get("ph") != "X" or e.get("pid") not in dev_pids:
      continue
    d = float(e.get("dur", 0))
    per[e["name"]] += d
    count[e["name"]] += 1
    lo, hi = min(lo, e["ts"]), max(hi, e["ts"] + d)
  busy = sum(per.values())
  lines = [f"device processes: {[pnames[p] for p in sorted(dev_pids)]}",
           f"events {sum(count.values())}, busy {busy / 1e3:.1f} ms over a "
           f"{(hi - lo) / 1e3:.1f} ms span"]
  for name, d in per.most_common(top):
    lines.append(f"{d / 1e3:9.2f} ms {100 * d / max(busy, 1):5.1f}% "
                 f"x{count[name]:<5d} {name[:110]}")
  return "\n".join(lines)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("path")
  ap.add_argument("--top", type=int, default=25)
  args = ap.parse_args()
  print(summarise(load(args.path), args.top))


if __name__ == "__main__":
  main()
