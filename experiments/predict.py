r"""Scores a split with a finetuned model (its best-valid checkpoint).

  python -m experiments.predict --workdir runs/ft_joint --split test \
    --out runs/ft_joint/preds_test.parquet

Writes one row per example: row_id, label, prob (and, for the joint model,
ctr_prob / txt_prob of the two branches). Batched and sharded like
evaluation.

The arguments are checked before anything is loaded (--workdir a run folder
with config.json; --out a .csv or .parquet file path that is not a folder);
the file is written atomically (a temporary file in the same folder, renamed
at the end, removed on failure). Errors print one `error: ...` line (exit 1).
"""
import os
import tempfile

from absl import app
from absl import flags
from absl import logging

from experiments import launch

_WORKDIR = launch.flag(flags.DEFINE_string, "workdir", None,
                       "Finetune run directory.", required=True)
_DATASET = launch.flag(flags.DEFINE_string, "dataset", None,
                       "Dataset (default: the run's).")
_DATA_DIR = launch.flag(flags.DEFINE_string, "data_dir", None,
                        "Raw data folder (default: the run's).")
_SPLIT = launch.flag(flags.DEFINE_enum, "split", "test",
                     ["train", "valid", "test"], "Split to score.")
_OUT = launch.flag(flags.DEFINE_string, "out", None,
                   "Output .parquet or .csv file.", required=True)
_BATCH = launch.flag(flags.DEFINE_integer, "batch_size", 256,
                     "Global batch size.")


def check_args(workdir: str, out: str, batch_size: int) -> str:
  """Validates the arguments before any work; returns the output format.

  Raises:
    finished.NotAFinishedRunError: --workdir is not a finished finetuning
      run (saying what it is and what to give instead).
    NotADirectoryError / ValueError ...: --out or --batch_size, named.
  """
  # pylint: disable=g-import-not-at-top
  from flip_jax import methods
  from flip_jax.train import finished
  # pylint: enable=g-import-not-at-top
  methods.check_plm_folder(finished.require(workdir))
  if batch_size <= 0:
    raise ValueError(f"--batch_size {batch_size} must be positive")
  if not out or out.endswith(("/", os.sep)) or os.path.isdir(out):
    raise IsADirectoryError(f"--out {out} is a folder; give a file path "
                            "ending in .parquet or .csv")
  if not out.endswith((".csv", ".parquet")):
    raise ValueError(f"--out {out}: the file name must end in .parquet or "
                     ".csv")
  parent = os.path.dirname(os.path.abspath(out))
  probe = parent
  while not os.path.exists(probe):
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    raise NotADirectoryError(f"--out {out}: {probe} is a file, not a folder")
  if not os.access(probe, os.W_OK):
    raise PermissionError(f"--out {out}: folder {probe} is not writable")
  return "csv" if out.endswith(".csv") else "parquet"


def write_table_atomic(table, out: str, fmt: str) -> None:
  """Writes `table` to `out` via a temporary file in the same folder."""
  # pylint: disable=g-import-not-at-top
  import pyarrow.csv as pacsv
  import pyarrow.parquet as pq
  # pylint: enable=g-import-not-at-top
  parent = os.path.dirname(os.path.abspath(out))
  os.makedirs(parent, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(out)}.",
                             suffix=".tmp", dir=parent)
  os.close(fd)
  try:
    if fmt == "csv":
      pacsv.write_csv(table, tmp)
    else:
      pq.write_table(table, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  fmt = check_args(_WORKDIR.value, _OUT.value, _BATCH.value)
  launch.init_runtime()
  # pylint: disable=g-import-not-at-top
  import jax
  import pyarrow as pa
  from experiments import scoring
  # pylint: enable=g-import-not-at-top
  overrides = {}
  if _DATASET.value:
    overrides["dataset"] = _DATASET.value
  if _DATA_DIR.value:
    overrides["data_dir"] = _DATA_DIR.value
  preds, all_metrics = scoring.score_splits(
      _WORKDIR.value, [_SPLIT.value], batch_size=_BATCH.value,
      data_overrides=overrides)
  pred, metrics = preds[_SPLIT.value], all_metrics[_SPLIT.value]
  if jax.process_index() == 0:
    write_table_atomic(pa.table({k: pred[k] for k in pred}), _OUT.value, fmt)
  logging.info("wrote %d rows to %s; %s", len(pred["prob"]), _OUT.value,
               metrics)
  print(f"{_SPLIT.value}: {len(pred['prob'])} rows, " + ", ".join(
      f"{k}={v:.4f}" for k, v in metrics.items()))


if __name__ == "__main__":
  launch.run_main(main)
