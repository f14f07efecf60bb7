r"""A/B matrix of the FLIP fast pretraining step, in one device command.

  python -m benchmarks.gpu_step_ab \
    --plms=.devcarry/minilm@1024,random:.devcarry/roberta-base@512 \
    --budget_s=420                       # $OUT (default runs/gpu_ab)
  bash benchmarks/gpu_step_ab.sh         # on a lent GPU (wheels, env)

Every configuration of ``--configs`` (atoms joined by '+': see
``step_ab_lib``; default ``step_ab_lib.MATRIX``) runs for every PLM of
``--plms`` (``<folder>@<batch>`` or ``random:<folder with
config.json>@<batch>``), configurations in the given order, each for every
PLM in turn, so that the budget cuts the least telling. Then, per PLM, the
atoms that beat bf16 by ``--combo_gain`` combined (``--combo``).

Each run is a fresh process (its own peak device memory, its own XLA_FLAGS,
and a failure recorded without stopping the matrix); up to ``--parallel``
of them build and compile side by side and take turns on the device (a
file lock taken at the warm-up and held to the process's exit, through the
trace and the bf16 matmul peak each measures). A run timed while others
compile shares the host's cores with them: confirm a close A/B with
``--parallel=1 --configs=<the two>``. Per run: compile time, the median of
``--windows`` timed windows of ``--window_steps`` steps, examples/s, peak
device memory (None on CPU), a profiler trace of 2 steps. Model FLOPs are
counted as ``benchmarks.pretrain_step --count_flops`` counts them (XLA's
CPU-backend count of the lowered step, in background processes off the
device; a remat run is charged its batch's share of the plain step's: the
recompute is not model work). MFU is against the datasheet
(``step_ab_lib.DATASHEET_TFLOPS``; None on CPU) and the measured matmul
peak. The baseline's and the fastest configuration's traces are summarised
(``trace_summary.profile``: top ops, share in matmuls / attention /
elementwise / copies). After ``--budget_s`` seconds nothing new starts
(nor with less than ``--min_start_s`` left) and running children are
killed; what was not run is recorded as skipped. Output:
``$OUT/gpu_step_ab.json`` (rewritten as results arrive) and
``$OUT/gpu_step_ab.log``. Configurations with XLA flags are skipped on CPU.
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

from benchmarks import step_ab_lib as lib
from benchmarks import trace_summary

_PLMS = flags.DEFINE_list(
    "plms", [".devcarry/minilm@1024", "random:.devcarry/roberta-base@512"],
    "PLMs as <folder>@<batch> or random:<folder with config.json>@<batch>.")
_CONFIGS = flags.DEFINE_list("configs", list(lib.MATRIX),
                             "Configurations, most telling first.")
_COMBO = flags.DEFINE_bool("combo", True, "Also run the winning atoms "
                           "combined (per PLM).")
_COMBO_GAIN = flags.DEFINE_float("combo_gain", 0.02, "Least examples/s gain "
                                 "over bf16 for an atom to be combined.")
_WINDOWS = flags.DEFINE_integer("windows", 3, "Timed windows per run.")
_WINDOW_STEPS = flags.DEFINE_integer("window_steps", 5, "Steps per window.")
_LENGTH = flags.DEFINE_integer("length", 100, "data.max_length.")
_LONGEST = flags.DEFINE_integer("longest", 75, "Length of 'longest' (the "
                                "longest ML-1M prompt).")
_MAX_MASKED = flags.DEFINE_integer("max_masked", 32, "MLM rows' gather size.")
_BUDGET_S = flags.DEFINE_float("budget_s", 420, "Wall-clock budget (s).")
_MIN_START_S = flags.DEFINE_float("min_start_s", 60, "Start no run with "
                                  "less than this left of the budget.")
_PARALLEL = flags.DEFINE_integer("parallel", 0, "Runs at once (0: 3 on a "
                                 "GPU, 1 on CPU).")
_MATMUL_N = flags.DEFINE_integer("matmul_n", None, "Size of the timed "
                                 "matmul (default: step_timing's).")
_PROFILE = flags.DEFINE_bool("profile", True, "Trace and summarise.")
_OUT = flags.DEFINE_string("out", os.environ.get("OUT") or "runs/gpu_ab",
                           "Output folder (default $OUT, else runs/gpu_ab).")
_WORK_DIR = flags.DEFINE_string("work_dir", "", "Children's logs and traces "
                                "(default: a fresh temporary folder).")
_CHILD = flags.DEFINE_string("child", None, "Internal: one run's spec.")

ROOT = pathlib.Path(__file__).resolve().parent.parent
POLL_S = 0.2


class Matrix:
  """The parent: runs, records, summarises."""

  def __init__(self, out: pathlib.Path, work: pathlib.Path):
    self.t0 = time.time()
    self.out, self.work = out, work
    self.log_f = open(out / "gpu_step_ab.log", "a", encoding="utf-8")
    self.platform = _platform()
    self.plms = [_parse_plm(p) for p in _PLMS.value]
    for i, p in enumerate(self.plms):  # labels name the runs: unique
      if any(q["label"] == p["label"] for q in self.plms[:i]):
        p["label"] += f"_{i}"
    self.results: list[dict] = []
    self.counts: dict = {}  # (label, length) -> (GFLOP at nominal batch, how)
    self.combined: set[str] = set()

  def log(self, msg: str):
    line = f"[{time.time() - self.t0:6.1f}s] {msg}"
    print(line, flush=True)
    self.log_f.write(line + "\n")
    self.log_f.flush()

  def left(self) -> float:
    return _BUDGET_S.value - (time.time() - self.t0)

  def entry(self, label: str, config: str) -> dict:
    plm = next(p for p in self.plms if p["label"] == label)
    e = {"plm": label, "config": config, "status": "pending"}
    try:
      e["spec"] = lib.spec(
          config, plm["plm"], plm["batch"], _LENGTH.value, _LONGEST.value,
          windows=_WINDOWS.value, window_steps=_WINDOW_STEPS.value,
          max_masked=_MAX_MASKED.value, matmul_n=_MATMUL_N.value,
          lock=str(self.work / "device.lock"),
          trace_dir=(str(self.work / "traces" / f"{label}__{config}")
                     if _PROFILE.value else None))
    except ValueError as err:
      e.update(status="err", error=str(err))
    self.results.append(e)
    return e

  # --- running -------------------------------------------------------------
  def run(self):
    self.log(f"platform {self.platform}; PLMs {self.plms}; budget "
             f"{_BUDGET_S.value:.0f} s")
    pending = [self.entry(p["label"], c) for c in _CONFIGS.value
               for p in self.plms]
    counting = _FlopCounter(self) if self.platform != "cpu" else None
    parallel = _PARALLEL.value or (3 if self.platform != "cpu" else 1)
    running: dict = {}
    while pending or running:
      for e in list(running.values()):
        self._poll(e, running)
      while pending and len(running) < parallel:
        self._start(pending.pop(0), running)
      if counting:
        counting.step()
      if not pending and _COMBO.value:
        pending += self._combinations(running)
      time.sleep(POLL_S)
    if counting:
      counting.finish(deadline=time.time() + 30)
    self.finish()

  def _start(self, e: dict, running: dict):
    if e["status"] != "pending":
      return self.log(f"{e['plm']} {e['config']}: {e['status']} "
                      f"{e.get('error', '')}")
    s = e["spec"]
    if s["xla_flags"] and self.platform == "cpu":
      return self._skip(e, "XLA GPU flags: skipped on CPU")
    if self.left() < _MIN_START_S.value:
      return self._skip(e, f"budget: {self.left():.0f} s left")
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false",
               TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    if s["xla_flags"]:
      env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {s['xla_flags']}".strip()
    e["log"] = str(self.work / f"{e['plm']}__{e['config']}.log")
    with open(e["log"], "w", encoding="utf-8") as f:
      e["proc"] = subprocess.Popen(
          [sys.executable, "-m", "benchmarks.gpu_step_ab",
           "--child=" + json.dumps(s)], stdout=f, stderr=subprocess.STDOUT,
          env=env, cwd=ROOT, start_new_session=True)
    e.update(status="running", started_s=time.time() - self.t0)
    running[id(e)] = e
    self.log(f"{e['plm']} {e['config']}: started")

  def _skip(self, e: dict, why: str):
    e.update(status="skipped", reason=why)
    self.log(f"{e['plm']} {e['config']}: skipped ({why})")
    self.write()

  def _poll(self, e: dict, running: dict):
    proc = e["proc"]
    if proc.poll() is None:
      if self.left() > 0:
        return
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
      e["error"] = "killed at the budget"
    del running[id(e)]
    del e["proc"]
    text = pathlib.Path(e["log"]).read_text(encoding="utf-8", errors="replace")
    found = [l for l in text.splitlines() if l.startswith("RESULT ")]
    e["wall_s"] = time.time() - self.t0 - e["started_s"]
    if found and not e.get("error"):
      e.update(json.loads(found[-1][7:]), status="ok")
      e.pop("metrics", None)
      self.log(f"{e['plm']} {e['config']}: {e['examples_per_s']:.0f} ex/s, "
               f"{1e3 * e['step_s']:.1f} ms/step, compile "
               f"{e['compile_s']:.1f} s, device peak {e['device_peak_gib']}")
    else:
      e.update(status="err", rc=proc.returncode,
               error=e.get("error") or _error_tail(text))
      self.log(f"{e['plm']} {e['config']}: error (rc {proc.returncode}): "
               f"{e['error'][-300:]}")
    self.write()

  def _combinations(self, running: dict) -> list[dict]:
    new = []
    for p in self.plms:
      label = p["label"]
      mine = [r for r in self.results if r["plm"] == label]
      if label in self.combined or any(r["status"] in ("pending", "running")
                                        for r in mine):
        continue
      self.combined.add(label)
      combo = lib.combination(mine, _COMBO_GAIN.value)
      if combo and all(r["config"] != combo for r in mine):
        self.log(f"{label}: combination {combo}")
        new.append(self.entry(label, combo))
    return new

  # --- results -------------------------------------------------------------
  def finish(self):
    for e in self.results:
      if e["status"] == "ok":
        e.update(lib.mfu(e, *self._model_gflop(e)))
    self.best = {}
    for p in self.plms:
      ok = [e for e in self.results
            if e["plm"] == p["label"] and e["status"] == "ok"]
      if ok:
        self.best[p["label"]] = max(ok, key=lambda e: e["examples_per_s"])[
            "config"]
    self.profiles = self._profiles() if _PROFILE.value else {}
    self.write()
    self.log("\n" + _table(self.results))
    self.log(f"wrote {self.out / 'gpu_step_ab.json'}")

  def _model_gflop(self, e: dict) -> tuple[float | None, str]:
    nominal = next(p["batch"] for p in self.plms if p["label"] == e["plm"])
    key = (e["plm"], e["length"])
    if key not in self.counts and self.platform == "cpu":
      for r in self.results:  # on CPU, this backend's count is the count
        if (r["status"] == "ok" and (r["plm"], r["length"]) == key
            and not r["spec"]["remat"]):
          self.counts[key] = (r["gflop_per_step"] * nominal / r["batch"],
                              "CPU-backend count of the plain step")
          break
    if key in self.counts:
      gflop, how = self.counts[key]
      return gflop * e["batch"] / nominal, how
    return e.get("gflop_per_step"), f"own count ({e.get('platform')} backend)"

  def _profiles(self) -> dict:
    out = {}
    for label, best in self.best.items():
      out[label] = {}
      for role, config in (("base", "base"), ("best", best)):
        e = next((r for r in self.results if r["plm"] == label
                  and r["config"] == config and r["status"] == "ok"), None)
        if e is None:
          out[label][role] = {"config": config, "note": "not run"}
          continue
        try:
          prof = trace_summary.profile(
              trace_summary.load(e["spec"]["trace_dir"]))
        except (Exception, SystemExit) as err:  # pylint: disable=broad-except
          prof = {"note": f"no summary: {type(err).__name__}: {err}"[:400]}
        out[label][role] = dict(prof, config=config,
                                trace_error=e.get("trace_error"))
        self.log(f"profile {label} {role} ({config}): "
                 + _profile_text(out[label][role]))
    return out

  def write(self):
    doc = {"platform": self.platform, "budget_s": _BUDGET_S.value,
           "wall_s": time.time() - self.t0, "plms": self.plms,
           "flag_values": {f: flags.FLAGS[f].value for f in (
               "configs", "windows", "window_steps", "length", "longest",
               "max_masked", "parallel", "combo_gain")},
           "model_gflop": {f"{k[0]}@{k[1]}": v for k, v in self.counts.items()},
           "results": [{k: v for k, v in e.items() if k != "proc"}
                       for e in self.results],
           "best": getattr(self, "best", {}),
           "profiles": getattr(self, "profiles", {})}
    tmp = self.out / "gpu_step_ab.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, default=str), encoding="utf-8")
    tmp.replace(self.out / "gpu_step_ab.json")


class _FlopCounter:
  """Model FLOPs per (PLM, length) at the nominal batch, counted one at a
  time in CPU processes (``pretrain_step --count_flops``) off the device."""

  def __init__(self, m: Matrix):
    self.m = m
    self.queue = [(p, n) for p in m.plms
                  for n in sorted({_LENGTH.value, _LONGEST.value})]
    self.proc = None

  def step(self):
    if self.proc is not None and self.proc.poll() is not None:
      self._collect()
    if self.proc is None and self.queue:
      self.cur = self.queue.pop(0)
      p, n = self.cur
      self.proc = subprocess.Popen(
          [sys.executable, "-m", "benchmarks.pretrain_step", "--count_flops",
           "--forms=fast", f"--batch={p['batch']}", f"--length={n}",
           f"--plm={p['plm']}", "--dtype=bfloat16",
           f"--max_masked={_MAX_MASKED.value}"], cwd=ROOT, text=True,
          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
          start_new_session=True)

  def _collect(self):
    out = self.proc.stdout.read()
    found = [l for l in out.splitlines() if l.startswith("RESULT ")]
    p, n = self.cur
    if found:
      self.m.counts[(p["label"], n)] = (
          json.loads(found[0][7:])["gflop_per_step"],
          "CPU-backend count (pretrain_step --count_flops, bfloat16)")
    else:
      self.m.log(f"FLOP count {p['label']} length {n} failed")
    self.proc = None

  def finish(self, deadline: float):
    while (self.proc is not None or self.queue) and time.time() < deadline:
      self.step()
      time.sleep(POLL_S)
    if self.proc is not None:
      os.killpg(self.proc.pid, signal.SIGKILL)


def _platform() -> str:
  """'cpu' or 'gpu' without touching the device (the parent never does)."""
  forced = os.environ.get("JAX_PLATFORMS", "").split(",")[0].strip()
  if forced:
    return forced
  return "gpu" if list(pathlib.Path("/dev").glob("nvidia[0-9]*")) else "cpu"


def _parse_plm(text: str) -> dict:
  plm, _, batch = text.rpartition("@")
  if not plm or not batch.isdigit():
    raise app.UsageError(f"--plms entry {text!r}: expected <plm>@<batch>")
  label = pathlib.Path(plm.removeprefix("random:")).name or plm
  return {"label": label, "plm": plm, "batch": int(batch)}


def _error_tail(text: str) -> str:
  lines = [l for l in text.splitlines() if l.strip()]
  return "\n".join(lines[-12:])[-2000:] or "no output"


def _fmt(v, spec: str) -> str:
  return "-" if v is None else format(v, spec)


def _table(results: list[dict]) -> str:
  rows = [f"{'plm':<14} {'config':<24} {'status':<7} {'ex/s':>8} "
          f"{'ms/step':>8} {'compile':>7} {'TFLOP/s':>8} {'MFU sheet':>9} "
          f"{'MFU mm':>7} {'peak GiB':>8}"]
  for e in results:
    rows.append(
        f"{e['plm'][:14]:<14} {e['config'][:24]:<24} {e['status']:<7} "
        f"{_fmt(e.get('examples_per_s'), '8.0f')} "
        f"{_fmt(e.get('step_s') and 1e3 * e['step_s'], '8.1f')} "
        f"{_fmt(e.get('compile_s'), '7.1f')} "
        f"{_fmt(e.get('model_tflops_per_s'), '8.1f')} "
        f"{_fmt(e.get('mfu_datasheet'), '9.1%')} "
        f"{_fmt(e.get('mfu_matmul'), '7.1%')} "
        f"{_fmt(e.get('device_peak_gib'), '8.1f')}")
  return "\n".join(rows)


def _profile_text(p: dict) -> str:
  if "share" not in p:
    return p.get("note", "")
  shares = ", ".join(f"{k} {v:.0%}" for k, v in p["share"].items())
  top = "; ".join(f"{n[:60]} {ms:.2f} ms" for n, ms, _, _ in p["top"][:8])
  return f"{p['op_ms']:.1f} ms of ops: {shares}. Top: {top}"


def main(argv):
  del argv
  if _CHILD.value:
    res = lib.run_child(json.loads(_CHILD.value))
    res.pop("metrics", None)
    print("RESULT " + json.dumps(res, default=float), flush=True)
    return
  out = pathlib.Path(_OUT.value)
  out.mkdir(parents=True, exist_ok=True)
  work = pathlib.Path(_WORK_DIR.value or tempfile.mkdtemp(prefix="gpu_ab_"))
  work.mkdir(parents=True, exist_ok=True)
  Matrix(out, work).run()


if __name__ == "__main__":
  app.run(main)
