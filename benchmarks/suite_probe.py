r"""Where the test suite's time goes: a pytest plugin and its summary.

  # pass 1 of make test, cold, with the probe (one JSON file per worker):
  FLIP_JAX_TEST_COMPILE_CACHE= FLIP_JAX_TEST_DEVICES=1 SUITE_PROBE_OUT=runs/probe \
      .venv/bin/python -m pytest -p benchmarks.suite_probe \
      -m "not slow and not gpu and not multidevice"
  python -m benchmarks.suite_probe runs/probe            # the summary

Per test (call, setup and teardown together), the plugin records its wall
time and JAX's own duration events in the test's process: backend compile
(`/jax/core/compile/backend_compile_duration`, XLA alone), tracing and
lowering to MLIR; and, with `jax_log_compiles` on, the name and seconds of
every program compiled or loaded from the persistent cache, with the line
of the library (else of the test) that asked for it. Launchers a test
starts are not seen (their time is in the test's wall). The summary prints
the totals, the programs by name and by that line (count, seconds, how many
test files compile one), the slowest tests with their compile share, and the
files by time.
"""
from __future__ import annotations

import collections
import glob
import json
import logging
import os
import re
import sys
import time
import traceback

import pytest

OUT_ENV = "SUITE_PROBE_OUT"
EVENTS = {"/jax/core/compile/backend_compile_duration": "compile",
          "/jax/core/compile/jaxpr_trace_duration": "trace",
          "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower"}
_PROGRAM = re.compile(r"Finished XLA compilation of (.+?) in ([0-9.e-]+) sec")

_current = ["(outside tests)"]
_tests: dict = collections.defaultdict(
    lambda: {"wall": 0.0, "compile": 0.0, "trace": 0.0, "lower": 0.0,
             "programs": []})


def _on_duration(event: str, duration: float, **_) -> None:
  if event in EVENTS:
    _tests[_current[0]][EVENTS[event]] += duration


_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _call_site() -> str:
  """The innermost frame of the library (flip_jax/, experiments/) on the
  stack, else of the tests: which of our lines asked for the program."""
  test_frame = "(no frame of ours)"
  for frame in reversed(traceback.extract_stack()):
    rel = os.path.relpath(frame.filename, _REPO)
    if rel.startswith(("flip_jax" + os.sep, "experiments" + os.sep)):
      return f"{rel}:{frame.lineno}"
    if rel.startswith("tests" + os.sep) and test_frame.startswith("("):
      test_frame = f"{rel}:{frame.lineno}"
  return test_frame


class _Programs(logging.Handler):

  def emit(self, record):
    m = _PROGRAM.search(record.getMessage())
    if m:
      _tests[_current[0]]["programs"].append(
          (m.group(1), float(m.group(2)), _call_site()))


def pytest_configure(config):
  del config
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_log_compiles", True)
  jax.monitoring.register_event_duration_secs_listener(_on_duration)
  logging.getLogger("jax").addHandler(_Programs(logging.DEBUG))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
  del nextitem
  _current[0] = item.nodeid
  start = time.perf_counter()
  yield
  _tests[item.nodeid]["wall"] += time.perf_counter() - start
  _current[0] = "(between tests)"


def pytest_unconfigure(config):
  worker = getattr(config, "workerinput", {}).get("workerid", "main")
  out = os.environ.get(OUT_ENV, "runs/suite_probe")
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, f"{worker}.json"), "w") as f:
    json.dump(_tests, f)


def summarize(folder: str, top: int = 30) -> None:
  tests: dict = {}
  for path in glob.glob(os.path.join(folder, "*.json")):
    with open(path) as f:
      tests.update(json.load(f))
  tests = {k: v for k, v in tests.items() if not k.startswith("(")}
  total = {k: sum(t[k] for t in tests.values())
           for k in ("wall", "compile", "trace", "lower")}
  print(f"{len(tests)} tests, summed wall {total['wall']:.1f} s: XLA compile "
        f"{total['compile']:.1f} s, tracing {total['trace']:.1f} s, lowering "
        f"{total['lower']:.1f} s")
  by_name = collections.defaultdict(lambda: [0, 0.0, set()])
  by_site = collections.defaultdict(lambda: [0, 0.0, set()])
  for test, t in tests.items():
    for name, secs, *site in t["programs"]:  # no site: an older probe's file
      for row in (by_name[name], by_site[site[0] if site else "?"]):
        row[0] += 1
        row[1] += secs
        row[2].add(test.split("::")[0])
  print(f"\nprograms by name (compiled or loaded; {top} largest):")
  print("   secs  count files  name")
  for name, (n, secs, files) in sorted(by_name.items(),
                                       key=lambda kv: -kv[1][1])[:top]:
    print(f"{secs:7.1f} {n:6d} {len(files):5d}  {name}")
  print(f"\nprograms by the line of ours that asked for them ({top} "
        "largest):")
  print("   secs  count files  line")
  for site, (n, secs, files) in sorted(
      by_site.items(), key=lambda kv: -kv[1][1])[:top]:
    print(f"{secs:7.1f} {n:6d} {len(files):5d}  {site}")
  print(f"\nslowest tests ({top}):")
  print("   wall compile  trace  lower programs  test")
  for test, t in sorted(tests.items(), key=lambda kv: -kv[1]["wall"])[:top]:
    print(f"{t['wall']:7.1f} {t['compile']:7.1f} {t['trace']:6.1f} "
          f"{t['lower']:6.1f} {len(t['programs']):8d}  {test}")
  files = collections.defaultdict(lambda: [0.0, 0.0, 0])
  for test, t in tests.items():
    row = files[test.split("::")[0]]
    row[0] += t["wall"]
    row[1] += t["compile"]
    row[2] += 1
  print(f"\nfiles by summed wall ({top}):")
  print("   wall compile tests  file")
  for name, (wall, comp, n) in sorted(files.items(),
                                      key=lambda kv: -kv[1][0])[:top]:
    print(f"{wall:7.1f} {comp:7.1f} {n:5d}  {name}")


if __name__ == "__main__":
  summarize(sys.argv[1] if len(sys.argv) > 1 else "runs/suite_probe")
