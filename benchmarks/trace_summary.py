r"""Summarises a jax.profiler perfetto trace: where the device time goes.

  python -m benchmarks.trace_summary <trace dir or perfetto_trace.json.gz> [--top=25]

Sums event durations per name on the device threads (GPU streams; on CPU,
the XLA op threads), and prints the top names with their share, plus the
total busy time against the wall span of the trace. ``--by_kind`` groups
the XLA ops by kind instead (numbered instances summed: ``ynn_fusion.12`` and
``ynn_fusion.40`` are one ``ynn_fusion`` row), leaving out the runtime's and
Python's enclosing events, so that the op time sums to the step's work:
where the non-matmul time goes.

  python -m benchmarks.finetune_step --modes=joint/mb8 --runs=1 --steps=2 \
    --batch=128 --length=75 --trace_dir=runs/trace_ft
  python -m benchmarks.trace_summary runs/trace_ft --by_kind
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re

# Enclosing (non-op) events of a CPU trace: Python frames, the thunk
# executor and its thread-pool waits, the jit dispatch.
_ENCLOSING = ("$", "ThunkExecutor", "SlinkyThreadPool", "PjitFunction",
              "CommonPjRtLoadedExecutable", "end: ")


def load(path: str) -> dict:
  if os.path.isdir(path):
    found = sorted(glob.glob(os.path.join(path, "**", "*.json.gz"),
                             recursive=True))
    if not found:
      raise SystemExit(f"{path}: no *.json.gz trace under it")
    path = found[-1]
  with gzip.open(path, "rt") as f:
    return json.load(f)


def _events(trace) -> list:
  """The trace's events (a perfetto JSON object, or its bare event list)."""
  return trace if isinstance(trace, list) else trace.get("traceEvents", [])


def summarise(trace: dict, top: int = 25) -> str:
  events = _events(trace)
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


def by_kind(trace: dict, top: int = 25) -> str:
  """Op time per kind of XLA op (instance numbers stripped)."""
  events = _events(trace)
  per = collections.Counter()
  count = collections.Counter()
  for e in events:
    if e.get("ph") != "X" or e["name"].startswith(_ENCLOSING):
      continue
    kind = re.sub(r"\.\d+$", "", e["name"])
    per[kind] += float(e.get("dur", 0))
    count[kind] += 1
  total = sum(per.values())
  lines = [f"op time {total / 1e3:.1f} ms in {sum(count.values())} ops"]
  for kind, d in per.most_common(top):
    lines.append(f"{d / 1e3:9.2f} ms {100 * d / max(total, 1):5.1f}% "
                 f"x{count[kind]:<6d} {kind[:100]}")
  return "\n".join(lines)


# Op categories by name (first match wins; approximate: XLA names fusions
# by their root op, cuBLAS / cuDNN by kernel): what share of the op time
# goes to matmuls, attention, elementwise work and data movement.
CATEGORIES = (
    ("attention", r"sdpa|fmha|flash|attention|softmax"),
    ("matmul", r"gemm|xmma|nvjet|cutlass|cublas|matmul|wgmma|\bdot|^dot|"
               r"_dot|dot_|convolution|ynn"),
    ("copy", r"copy|transpose|memcpy|memset|concatenate|slice|gather|"
             r"scatter|broadcast|\bpad|bitcast"),
    ("elementwise", r"fusion|loop_|input_|reduce|add|multiply|subtract|"
                    r"divide|exp|log|convert|select|compare|max|min|tanh|"
                    r"erf|sqrt|negate|power|iota|rng|threefry|and|or|xor|"
                    r"shift"),
)


def op_times(trace) -> collections.Counter:
  """Device time (us) per op name: the GPU streams' events when the trace
  has any, else the XLA op events of a CPU trace (as ``by_kind``)."""
  events = _events(trace)
  pnames = {e["pid"]: e["args"].get("name", "") for e in events
            if e.get("ph") == "M" and e.get("name") == "process_name"}
  gpu = {p for p, n in pnames.items() if "/device:GPU" in n}
  per = collections.Counter()
  for e in events:
    if e.get("ph") != "X":
      continue
    if (e.get("pid") not in gpu) if gpu else e["name"].startswith(_ENCLOSING):
      continue
    per[e["name"]] += float(e.get("dur", 0))
  return per


def category(name: str) -> str:
  low = name.lower()
  for cat, pattern in CATEGORIES:
    if re.search(pattern, low):
      return cat
  return "other"


def profile(trace, top: int = 15) -> dict:
  """Op time, its share per category and the top ops (JSON-ready)."""
  per = op_times(trace)
  total = sum(per.values()) or 1.0
  cats = collections.Counter()
  for name, d in per.items():
    cats[category(name)] += d
  return {"op_ms": sum(per.values()) / 1e3, "ops": len(per),
          "share": {c: cats[c] / total for c, _ in CATEGORIES + (("other",
                                                                  ""),)},
          "top": [[name[:120], d / 1e3, d / total, category(name)]
                  for name, d in per.most_common(top)]}


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("path")
  ap.add_argument("--top", type=int, default=25)
  ap.add_argument("--by_kind", action="store_true",
                  help="op time per kind of XLA op (see the docstring)")
  args = ap.parse_args()
  trace = load(args.path)
  print(by_kind(trace, args.top) if args.by_kind else
        summarise(trace, args.top))


if __name__ == "__main__":
  main()
