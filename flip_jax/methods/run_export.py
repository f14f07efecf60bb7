"""Any finished run to PyTorch, through the same seam as `predict`.

`export_run(workdir, out_dir, check=True)` checks the destination before
anything is loaded, reloads the run with `flip_jax.train.reload.load_run`
(its own config, architecture, vocabulary and best variables), hands it to
the exporter its task registers in `flip_jax.methods.EXPORTERS`, and with
``check`` scores rows of the run's test split with both the export
(PyTorch) and Flax, failing above `CHECK_ATOL`.

The exporter contract (a module named in the registry):

  write(run, out_dir, source) -> folder
      writes the export atomically into ``out_dir`` (already checked) and
      returns it; ``source`` is the provenance dict to record.
  compare(folder, run, batch) -> {output name: max |p_torch - p_flax|}
      reloads ``folder`` in PyTorch and scores ``batch`` (the data's
      ``eval_keys``, host numpy, built by `check_batch`) with both models
      in float32 without dropout.

Nothing here knows a method; it sits above ``flip_jax.export`` (the PyTorch
twins and weight tables, which import neither ``train`` nor ``methods``)
because it reloads runs and reads the methods' registry.
"""
from __future__ import annotations

import importlib
import logging
import os
import pathlib

import numpy as np

from flip_jax.data import pipeline
from flip_jax.export import ctr_torch
from flip_jax.export import hf_export
from flip_jax.train import reload

log = logging.getLogger(__name__)

# Largest |p_torch - p_flax| accepted by the parity check (float32).
CHECK_ATOL = 1e-5


class ExportCheckError(RuntimeError):
  """The export's parity check failed."""


def check_destination(out_dir, workdir=None) -> pathlib.Path:
  """`hf_export.check_destination` for an export of the run `workdir`."""
  return hf_export.check_destination(
      out_dir, protect={"the run's --workdir": workdir},
      legacy=ctr_torch.is_legacy_export)


def exporter(task: str):
  """The exporter module of ``task`` (see the module docstring)."""
  # The registry is the package this module belongs to (imported late:
  # the package imports the tasks, and their exporters import this).
  from flip_jax import methods  # pylint: disable=g-import-not-at-top
  if task not in methods.EXPORTERS:
    raise ValueError(f"task {task!r} has no PyTorch export; exportable: "
                     f"{sorted(methods.EXPORTERS)}")
  return importlib.import_module(methods.EXPORTERS[task])


def check_batch(run, num_rows: int, split: str = "test"
                ) -> dict[str, np.ndarray]:
  """`num_rows` rows spread evenly over a split (all of it if smaller), as
  the loop's evaluation feeds them to ``task.predict`` (the data's
  ``eval_transform`` applied, its ``eval_keys`` kept)."""
  if num_rows <= 0:
    raise ValueError(f"num_rows must be > 0, got {num_rows}")
  cols = run.data.eval_splits[split]
  n = len(cols["label"])
  if n == 0:
    raise ValueError(f"{run.workdir}: the {split!r} split is empty; nothing "
                     "to check")
  idx = np.unique(np.linspace(0, n - 1, min(num_rows, n)).astype(np.int64))
  rows = {k: np.asarray(v[idx]) for k, v in cols.items()}
  batch = next(pipeline.eval_batches(
      rows, global_batch_size=len(idx), process_index=0, process_count=1,
      transform=run.data.eval_transform))
  return {k: np.asarray(batch[k]) for k in run.data.eval_keys}


def source_of(run) -> dict:
  """Provenance recorded in every export."""
  return {"workdir": os.path.abspath(run.workdir), "task": run.config.task,
          "dataset": run.config.data.dataset, "best_step": int(run.best_step)}


def export_loaded(run, out_dir, *, check: bool = False,
                  num_rows: int = 256) -> float:
  """Exports a reloaded run (`reload.Run`); returns the check's max
  |p_torch - p_flax| (NaN without ``check``).

  Raises:
    ExportCheckError: the check exceeds CHECK_ATOL.
  """
  module = exporter(run.config.task)
  folder = module.write(run, check_destination(out_dir, run.workdir),
                        source_of(run))
  if not check:
    return float("nan")
  batch = check_batch(run, num_rows)
  diffs = module.compare(folder, run, batch)
  worst = max(diffs.values())
  rows = len(next(iter(batch.values())))
  log.info("export check on %d test rows: %s", rows, diffs)
  print(f"check: {rows} test rows, max |p_torch - p_flax| = {worst:.3e} ("
        + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()) + ")")
  if not worst <= CHECK_ATOL:
    raise ExportCheckError(f"export check FAILED for {folder}: max |p_torch"
                           f" - p_flax| = {worst:.3e} > {CHECK_ATOL}")
  return worst


def export_run(workdir, out_dir, *, check: bool = False, num_rows: int = 256,
               data_overrides: dict | None = None) -> float:
  """Exports the best checkpoint of any finished run (module docstring).

  The destination is checked before anything is loaded: a new path, an
  empty folder or an earlier export holding only what it wrote; never the
  run's workdir (`hf_export.ExportDestinationError` otherwise).
  """
  check_destination(out_dir, workdir)
  run = reload.load_run(os.fspath(workdir), data_overrides=data_overrides)
  return export_loaded(run, out_dir, check=check, num_rows=num_rows)
