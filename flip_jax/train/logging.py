"""Run logging: scalars to JSONL + TensorBoard, progress lines, checks.

* `MetricWriter` appends one JSON object per `write_scalars` call to
  ``{workdir}/metrics.jsonl`` and writes TensorBoard events to
  ``{workdir}/tb`` (process 0 only). On resume it drops what was logged past
  the restored step, so no step appears twice.
* `Progress` logs "step/total, scalars, examples/s, ETA" every N steps.
* `save_pending` / `load_pending` keep, with each checkpoint, the metrics
  of its steps after the last logged row, so a run resumed from it (after
  SIGTERM or SIGKILL) logs the same rows as an uninterrupted run.
* `check_finite` fails fast on NaN/Inf with every loss term in the message.
* `log_startup` logs versions, devices, the mesh, the config and a param
  overview.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import time
from typing import Any, Callable, Mapping

import flax
import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging

from flip_jax import jsonio
from flip_jax.optim import param_paths

METRICS_FILE = "metrics.jsonl"
TB_DIR = "tb"
PENDING_FILE = "pending_metrics.json"


def _to_scalar(key: str, value) -> float | int:
  arr = np.asarray(jax.device_get(value))
  if arr.size != 1:
    raise ValueError(f"metric {key!r}: expected a scalar, got shape "
                     f"{arr.shape}")
  item = arr.reshape(()).item()
  if isinstance(item, bool) or not isinstance(item, (int, float)):
    raise TypeError(f"metric {key!r}: expected a number, got "
                    f"{type(item).__name__}")
  return item


def _truncate_jsonl(path: str, resume_step: int) -> int:
  """Keeps lines with step <= resume_step (atomic rewrite); returns dropped."""
  with open(path) as f:
    lines = f.readlines()
  kept, dropped = [], 0
  for lineno, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      step = json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
      # A half-written last line from a killed run is dropped; anything else
      # is a corrupt file the user should look at.
      if lineno == len(lines):
        dropped += 1
        continue
      raise ValueError(f"{path}:{lineno}: not a JSON object with a 'step' "
                       f"field: {line[:80]!r}") from None
    if step <= resume_step:
      kept.append(line if line.endswith("\n") else line + "\n")
    else:
      dropped += 1
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(kept)
  os.replace(tmp, path)
  return dropped


class MetricWriter:
  """Scalars to ``{workdir}/metrics.jsonl`` and TensorBoard ``{workdir}/tb``.

  Args:
    workdir: run directory.
    enabled: write anything at all (default: process 0 only).
    resume_step: None = append to an existing file as is; an int = drop
      lines with step > resume_step first (pass the restored step on a
      resume, -1 on a first start to discard a crashed run's lines).
      TensorBoard is told to purge events after it too.
  """

  def __init__(self, workdir: str | os.PathLike, *,
               enabled: bool | None = None, resume_step: int | None = None):
    self.enabled = (jax.process_index() == 0) if enabled is None else enabled
    self.path = os.path.join(os.fspath(workdir), METRICS_FILE)
    self._file = None
    self._tb = None
    if not self.enabled:
      return
    os.makedirs(os.fspath(workdir), exist_ok=True)
    if resume_step is not None and os.path.exists(self.path):
      dropped = _truncate_jsonl(self.path, resume_step)
      if dropped:
        logging.info("metrics: dropped %d lines past step %d from %s",
                     dropped, resume_step, self.path)
    self._file = open(self.path, "a")  # pylint: disable=consider-using-with
    # Imported here: it pulls in protobuf (~2 s) and only process 0 needs it.
    import tensorboardX  # pylint: disable=g-import-not-at-top
    purge = None if resume_step is None else max(resume_step + 1, 0)
    self._tb = tensorboardX.SummaryWriter(
        os.path.join(os.fspath(workdir), TB_DIR), purge_step=purge)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Writes {name: scalar} at `step` (one JSONL line, flushed)."""
    if not self.enabled:
      return
    if self._file is None:
      raise RuntimeError("MetricWriter: write after close()")
    step = int(step)
    row = {k: _to_scalar(k, v) for k, v in scalars.items()}
    if "step" in row:
      raise ValueError("metric name 'step' is reserved")
    self._file.write(json.dumps({"step": step, **row}) + "\n")
    self._file.flush()
    for k, v in row.items():
      self._tb.add_scalar(k, v, step)
    self._tb.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def save_pending(workdir: str | os.PathLike, step: int,
                 values: Mapping[str, np.ndarray], keep_steps) -> None:
  """Records, with the checkpoint of `step`, the per-step metrics of its
  steps not yet in a row ({name: [steps]}, `steps.fetch_metrics`; empty:
  none). Entries of checkpoints not in `keep_steps` are dropped; atomic.
  """
  path = os.path.join(os.fspath(workdir), PENDING_FILE)
  exists = os.path.exists(path)
  if not values and not exists:
    return
  record = jsonio.read_json(path, expect=dict) if exists else {}
  keep = {str(int(s)) for s in keep_steps} | {str(int(step))}
  record = {k: v for k, v in record.items() if k in keep}
  record.pop(str(int(step)), None)
  if values:
    record[str(int(step))] = {k: [float(x) for x in v]
                              for k, v in values.items()}
  jsonio.write_json_atomic(path, record)


def load_pending(workdir: str | os.PathLike, step: int) -> list[dict]:
  """The pending steps' metrics saved with the checkpoint of `step` (one
  dict per step, the form the loop's history holds); [] when none."""
  path = os.path.join(os.fspath(workdir), PENDING_FILE)
  if not os.path.exists(path):
    return []
  values = jsonio.read_json(path, expect=dict).get(str(int(step)))
  if not values:
    return []
  values = {k: np.asarray(v, np.float64) for k, v in values.items()}
  n = len(next(iter(values.values())))
  return [{k: v[i] for k, v in values.items()} for i in range(n)]


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
  """All rows of ``{workdir}/metrics.jsonl``."""
  path = os.path.join(os.fspath(workdir), METRICS_FILE)
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _fmt(v) -> str:
  return f"{v:.4g}" if isinstance(v, float) else str(v)


class Progress:
  """Periodic progress lines with throughput and ETA.

  Args:
    total_steps: last step of the run.
    every_steps: log when ``step % every_steps == 0`` and at the last step.
    examples_per_step: global batch size (for examples/s).
    start_step: the step training starts from (resume aware).
    clock: time source (tests inject a fake one).
  """

  def __init__(self, total_steps: int, *, every_steps: int,
               examples_per_step: int, start_step: int = 0,
               clock: Callable[[], float] = time.monotonic):
    if every_steps < 1:
      raise ValueError(f"every_steps must be >= 1, got {every_steps}")
    self.total_steps = int(total_steps)
    self.every_steps = int(every_steps)
    self.examples_per_step = int(examples_per_step)
    self._clock = clock
    self._last_step = int(start_step)
    self._last_time = clock()

  def update(self, step: int, scalars: Mapping[str, Any] | None = None
             ) -> dict[str, float] | None:
    """Logs a line if `step` is due.

    Args:
      step: the step just finished.
      scalars: values to show (e.g. losses).

    Returns:
      {'perf/steps_per_sec', 'perf/examples_per_sec'} when a line was logged
      (to pass on to the MetricWriter), else None.
    """
    step = int(step)
    if step % self.every_steps and step != self.total_steps:
      return None
    now = self._clock()
    dt, dsteps = now - self._last_time, step - self._last_step
    self._last_time, self._last_step = now, step
    sps = dsteps / dt if dt > 0 and dsteps > 0 else float("nan")
    remaining = max(self.total_steps - step, 0)
    eta = (str(datetime.timedelta(seconds=round(remaining / sps)))
           if math.isfinite(sps) and sps > 0 else "?")
    shown = " ".join(f"{k}={_fmt(_to_scalar(k, v))}"
                     for k, v in (scalars or {}).items())
    pct = 100.0 * step / max(self.total_steps, 1)
    logging.info("step %d/%d (%.1f%%) %s | %.1f ex/s %.2f steps/s | ETA %s",
                 step, self.total_steps, pct, shown,
                 sps * self.examples_per_step, sps, eta)
    return {"perf/steps_per_sec": sps,
            "perf/examples_per_sec": sps * self.examples_per_step}


def check_finite(step: int, scalars: Mapping[str, Any]) -> None:
  """Raises FloatingPointError if any scalar is NaN/Inf.

  The message names the step and lists every term (non-finite ones marked),
  so the failing loss component is visible at once.
  """
  values = {k: _to_scalar(k, v) for k, v in scalars.items()}
  bad = [k for k, v in values.items() if not math.isfinite(v)]
  if bad:
    terms = ", ".join(f"{k}={v!r}{' <-' if k in bad else ''}"
                      for k, v in values.items())
    raise FloatingPointError(f"non-finite {', '.join(bad)} at step {int(step)}"
                             f": {terms}")


def param_overview(params) -> list[str]:
  """Lines: total count, then count and leaf shapes per top-level subtree."""
  paths = param_paths(params)
  total = sum(int(np.prod(np.shape(v))) for v in paths.values())
  lines = [f"params: {total:,} in {len(paths)} arrays"]
  groups: dict[str, list[str]] = {}
  for p in paths:
    groups.setdefault(p.split("/", 1)[0], []).append(p)
  for top, ps in groups.items():
    n = sum(int(np.prod(np.shape(paths[p]))) for p in ps)
    lines.append(f"  {top}: {n:,} ({100.0 * n / max(total, 1):.1f}%)")
    for p in ps:
      v = paths[p]
      lines.append(f"    {p} {tuple(np.shape(v))} "
                   f"{getattr(v, 'dtype', type(v).__name__)}")
  return lines


def log_startup(config, mesh, params) -> list[str]:
  """Logs versions, devices, mesh, resolved config and param overview.

  Args:
    config: the run's ConfigDict (logged as JSON), or None.
    mesh: the jax Mesh, or None.
    params: params pytree (arrays or ShapeDtypeStructs).

  Returns:
    The logged lines.
  """
  devices = jax.devices()
  lines = [
      f"versions: jax {jax.__version__}, flax {flax.__version__}, optax "
      f"{optax.__version__}, orbax-checkpoint {ocp.__version__}",
      f"processes: {jax.process_count()} (this is {jax.process_index()}), "
      f"devices: {jax.device_count()} global / {jax.local_device_count()} "
      f"local, {devices[0].platform} ({devices[0].device_kind})",
  ]
  if mesh is not None:
    lines.append(f"mesh: {dict(mesh.shape)}")
  if config is not None:
    to_json = getattr(config, "to_json_best_effort", None)
    lines.append("config: " + (to_json(sort_keys=True) if to_json
                               else json.dumps(config, default=str)))
  lines += param_overview(params)
  for line in lines:
    logging.info("%s", line)
  return lines
