r"""Scores a split with a finetuned model (its best-valid checkpoint).

  python -m experiments.predict --workdir runs/ft_joint --split test \
    --out runs/ft_joint/preds_test.parquet

Writes one row per example: row_id, label, prob (and, for the joint model,
ctr_prob / txt_prob of the two branches). Batched and sharded like
evaluation.
"""
import os

from absl import app
from absl import flags
from absl import logging

from experiments import launch

_WORKDIR = launch.flag(flags.DEFINE_string, "workdir", None, "Finetune run directory.",
                               required=True)
_DATASET = launch.flag(flags.DEFINE_string, "dataset", None,
                               "Dataset (default: the run's).")
_DATA_DIR = launch.flag(flags.DEFINE_string, "data_dir", None,
                                "Raw data folder (default: the run's).")
_SPLIT = launch.flag(flags.DEFINE_enum, "split", "test", ["train", "valid", "test"],
                           "Split to score.")
_OUT = launch.flag(flags.DEFINE_string, "out", None, "Output .parquet or .csv file.",
                           required=True)
_BATCH = launch.flag(flags.DEFINE_integer, "batch_size", 256, "Global batch size.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  launch.init_runtime()
  # pylint: disable=g-import-not-at-top
  import jax
  import pyarrow as pa
  import pyarrow.csv as pacsv
  import pyarrow.parquet as pq
  from flip_jax import methods
  from flip_jax.data import pipeline
  from flip_jax.data import prepare
  from flip_jax.methods.flip import finetune
  from flip_jax.train import evaluate as eval_lib
  from flip_jax.train import runtime
  # pylint: enable=g-import-not-at-top
  overrides = {}
  if _DATASET.value:
    overrides["dataset"] = _DATASET.value
  if _DATA_DIR.value:
    overrides["data_dir"] = _DATA_DIR.value
  config, model, variables, tokenizer, prepared = finetune.load_finetuned(
      _WORKDIR.value, data_overrides=overrides)
  if tokenizer is not None:
    splits = prepare.tokenize_dataset(prepared, tokenizer, config.data.max_length)
  else:
    splits = prepared.splits
  keys = finetune.model_keys(config.finetune.mode)
  columns = pipeline.array_columns(splits[_SPLIT.value], keys)
  mesh, rules = runtime.mesh_and_rules(config)
  task = methods.make_task(config)
  task.model = model
  predict_fn = eval_lib.make_predict_fn(task.predict, mesh, rules, None)
  pred = eval_lib.predict_split(predict_fn, variables, columns, keys=keys,
                                batch_size=_BATCH.value, mesh=mesh,
                                rules=rules)
  metrics = task.eval_metrics(pred, _SPLIT.value)
  if jax.process_index() == 0:
    table = pa.table({k: pred[k] for k in pred})
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    tmp = _OUT.value + ".tmp"
    if _OUT.value.endswith(".csv"):
      pacsv.write_csv(table, tmp)
    else:
      pq.write_table(table, tmp)
    os.replace(tmp, _OUT.value)
  logging.info("wrote %d rows to %s; %s", len(pred["prob"]), _OUT.value, metrics)
  print(f"{_SPLIT.value}: {len(pred['prob'])} rows, " + ", ".join(
      f"{k}={v:.4f}" for k, v in metrics.items()))


if __name__ == "__main__":
  app.run(main)
