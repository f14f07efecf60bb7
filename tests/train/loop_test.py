"""The shared loop (``flip_jax.train.loop``) over every registered task.

* A 2-step smoke run of each task of ``flip_jax.methods.TASKS`` (FLIP
  finetuning in each mode), from the config file in ``experiments/configs``
  that names it, at tiny sizes: a task registered later is covered without
  editing here.
* Early stopping on valid AUC: where it stops, ``early_stopping.json``, and
  the best checkpoint reloaded for ``results.json``.
* A rerun of a finished run does not train again.
* ``config_compat``: a finetuning run whose ``config.json`` has the old
  layout (per-task training fields, no ``task``) still loads.
"""
import functools
import importlib
import json
import math
import os
import pathlib

import jax
import ml_collections as mlc
import numpy as np
import pytest

from flip_jax import checkpoint
from flip_jax import methods
from flip_jax.train import config_compat
from flip_jax.train import loop
from flip_jax.train import run_files
from flip_jax.train import reload

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "experiments/configs"
# Config variants (the part after ':' of --config) of the tasks whose runs
# differ by more than size; every other task is found in its config file
# and runs its tiny (else default) variant.
VARIANTS = {
    "flip_pretrain": ["preset=tiny"],
    "flip_finetune": ["preset=tiny,mode=id", "preset=tiny,mode=plm",
                      "preset=tiny,mode=joint"],
    "ctr": ["model=dcnv2"],
}
# Whether a known task evaluates (valid / test splits, results.json).
EVALUATED = {"flip_pretrain": False, "flip_finetune": True, "ctr": True}


def _get_config(module, variant: str):
  return importlib.import_module(f"experiments.configs.{module}").get_config(
      ",".join(a for a in ("dataset=synthetic", variant) if a))


@functools.lru_cache(maxsize=None)
def task_configs() -> dict[str, tuple[str, list[str]]]:
  """{task: (config module, variants)} over experiments/configs/*.py."""
  found = {}
  for path in sorted(CONFIGS.glob("*.py")):
    name = path.stem
    if name.startswith("_") or name in ("common", "data"):
      continue
    module = importlib.import_module(f"experiments.configs.{name}")
    if not hasattr(module, "get_config"):
      continue
    for variant in ("preset=tiny", ""):
      try:
        task = _get_config(name, variant).get("task")
      except ValueError:  # the config has no such variant key
        continue
      if task and task not in found:
        found[task] = (name, VARIANTS.get(task, [variant]))
      break
  return found


def tiny_fields(plm_dir, cache_dir) -> dict:
  """Tiny sizes for any task; a field a config lacks is left alone."""
  return {
      "data.cache_dir": str(cache_dir),
      "data.synthetic.num_users": 60, "data.synthetic.num_movies": 50,
      "data.synthetic.num_ratings": 1500, "data.max_length": 32,
      "model.plm.name": str(plm_dir), "model.plm.num_layers": 1,
      "model.ctr.embed_dim": 8, "model.ctr.dnn_hidden": (16, 8),
      "model.ctr.low_rank": 4, "model.ctr.num_experts": 2,
      "model.ctr.att_layers": 1,
      "pretrain.proj_dim": 16, "pretrain.mtm.field_dim": 8,
      "train.batch_size": 16, "train.eval_batch_size": 64,
      "train.micro_batch_size": 0, "train.max_steps": 2,
      "train.eval_every_steps": 2, "log_every_steps": 1,
  }


def set_fields(cfg, values, *, missing_ok=False):
  """Sets dotted fields ('train.max_steps') of ``cfg``; returns cfg.

  A field ``cfg`` lacks is an error, or left alone with ``missing_ok``.
  """
  for key, value in values.items():
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
      node = node.get(p) if isinstance(node, mlc.ConfigDict) else None
      if node is None:
        break
    if isinstance(node, mlc.ConfigDict) and leaf in node:
      node[leaf] = value
    elif not missing_ok:
      raise KeyError(f"config has no field {key!r}")
  return cfg


def task_config(task: str, variant: str, plm_dir, cache_dir, **extra):
  """The task's config file with ``dataset=synthetic,<variant>``, tiny."""
  configs = task_configs()
  if task not in configs:
    pytest.fail(f"task {task!r}: no config file in {CONFIGS} sets "
                f"config.task={task!r}")
  cfg = _get_config(configs[task][0], variant)
  assert cfg.task == task
  set_fields(cfg, tiny_fields(plm_dir, cache_dir), missing_ok=True)
  return set_fields(cfg, extra)


def train(cfg, workdir):
  return loop.train_and_evaluate(cfg, str(workdir), methods.make_task(cfg))


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def read_json(path):
  with open(path) as f:
    return json.load(f)


def latest_step(directory):
  with checkpoint.Checkpointer(str(directory), max_to_keep=None,
                               save_interval_steps=1) as c:
    return c.latest_step()


def ctr_config(cache_dir, **extra):
  """The ctr task at tiny sizes (no PLM)."""
  return task_config("ctr", "model=dcnv2", "unused", cache_dir, **extra)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("loop_cache")


# The 8-device loop smoke of these cases is `slow` (make test skips it):
# another test of `make test` checks the same sharded step against one
# device, or runs the same task's loop sharded (named below), and every
# method keeps one case here (its loop's sharded init, data, evaluation and
# checkpoints on the mesh).
SHARDED_ELSEWHERE = {
    "ctr:model=dcnv2": "methods/ctr_test.py::"
                       "test_sharded_train_step_equals_single_device",
    "flip_finetune:preset=tiny,mode=id": "the joint case (both towers)",
    "flip_finetune:preset=tiny,mode=plm": "the joint case (both towers)",
    "flip_pretrain:preset=tiny": "methods/flip/pretrain_loop_test.py::"
                                 "test_two_processes_equal_one (this loop "
                                 "on 2 hosts x 2 devices)",
    "clickprompt_pretrain:preset=tiny": "methods/clickprompt/step_test.py::"
                                        "test_eight_devices_equal_one",
    "srp4ctr_pretrain:preset=tiny": "methods/srp4ctr/step_test.py::"
                                    "test_pretrain_step_8_devices_equals_1",
}


def _cases():
  configs = task_configs()
  cases = [(name, variant) for name in sorted(methods.TASKS)
           for variant in (configs[name][1] if name in configs else [""])]
  ids = [f"{name}:{variant}" for name, variant in cases]
  stale = set(SHARDED_ELSEWHERE) - set(ids)
  assert not stale, f"SHARDED_ELSEWHERE names no case: {sorted(stale)}"
  return [pytest.param(*case, id=i, marks=[pytest.mark.slow] * (
      i in SHARDED_ELSEWHERE)) for case, i in zip(cases, ids)]


# ------------------------------------------------------------------- smoke
@pytest.mark.multidevice  # every task's step sharded over 8 devices
@pytest.mark.parametrize("name,variant", list(_cases()))
def test_two_steps_of_every_task(name, variant, tiny_bert_dir, cache_dir,
                                 tmp_path):
  cfg = task_config(name, variant, tiny_bert_dir, cache_dir)
  res = train(cfg, tmp_path)
  assert isinstance(res, dict) and res
  recs = read_metrics(tmp_path)
  assert [r["step"] for r in recs] == [1, 2]
  assert all(math.isfinite(r["train/loss"]) for r in recs)
  assert read_json(tmp_path / "config.json")["task"] == name
  assert (tmp_path / "feature_map.json").exists()
  assert latest_step(tmp_path) == 2
  evaluated = (tmp_path / run_files.RESULTS).exists()
  assert evaluated == EVALUATED.get(name, evaluated)
  if not evaluated:
    assert res["train/loss"] == recs[-1]["train/loss"]
    return
  assert read_json(tmp_path / run_files.RESULTS) == res
  assert res["task"] == name and res["steps"] == 2 and res["best_step"] == 2
  for key in ("valid/auc", "valid/logloss", "test/auc", "test/logloss"):
    assert math.isfinite(res[key]), key
  assert recs[-1]["valid/auc"] == res["valid/auc"]
  assert latest_step(tmp_path / "best") == 2
  assert read_json(tmp_path / run_files.TRACKER)["2"]["best_step"] == 2


# ---------------------------------------------------------- early stopping
@pytest.fixture(scope="module")
def stopped_run(cache_dir, tmp_path_factory):
  """lr 0: the valid AUC never changes, so no evaluation after the first is
  better; with patience 2 and an evaluation every step the run stops at
  step 3 of 10."""
  workdir = tmp_path_factory.mktemp("stopped")
  cfg = ctr_config(cache_dir, **{"optim.lr": 0.0, "train.patience": 2,
                                 "train.eval_every_steps": 1,
                                 "train.max_steps": 10, "ckpt.keep": 10})
  return workdir, cfg, train(cfg, workdir)


def test_early_stopping_stops_after_patience_evaluations(stopped_run):
  workdir, _, res = stopped_run
  recs = read_metrics(workdir)
  assert [r["step"] for r in recs] == [1, 2, 3]
  aucs = [r["valid/auc"] for r in recs]
  assert aucs[0] == aucs[1] == aucs[2]
  assert res["steps"] == 3 and res["best_step"] == 1
  assert latest_step(workdir) == 3
  tracker = read_json(workdir / run_files.TRACKER)
  assert sorted(tracker, key=int) == ["1", "2", "3"]
  assert tracker["1"] == {"best_auc": aucs[0], "best_step": 1,
                          "bad_evals": 0, "done": False}
  assert tracker["2"] == {"best_auc": aucs[0], "best_step": 1,
                          "bad_evals": 1, "done": False}
  assert tracker["3"] == {"best_auc": aucs[0], "best_step": 1,
                          "bad_evals": 2, "done": True}
  # The best checkpoint is step 1's, and results.json evaluates it.
  assert latest_step(workdir / "best") == 1
  assert res["valid/auc"] == aucs[0]
  assert read_json(workdir / run_files.RESULTS) == res
  best = checkpoint.restore_variables(str(workdir / "best"), step=1)
  jax.tree.map(np.testing.assert_array_equal, best["params"],
               checkpoint.restore_params(str(workdir), step=1))


def test_early_stopping_reloads_the_best_evaluation(cache_dir, tmp_path):
  """A moving AUC, patience 1: the run stops at the first evaluation that
  is not better, and results.json holds the best step's valid AUC."""
  cfg = ctr_config(cache_dir, **{"optim.lr": 0.05, "train.patience": 1,
                                 "train.eval_every_steps": 1,
                                 "train.max_steps": 12})
  res = train(cfg, tmp_path)
  recs = read_metrics(tmp_path)
  aucs = {r["step"]: r["valid/auc"] for r in recs}
  # The tracker's rule replayed on the logged evaluations.
  best_step, stop = 1, 12
  for s in sorted(aucs)[1:]:
    if aucs[s] > aucs[best_step]:
      best_step = s
    else:
      stop = s
      break
  assert stop < 12  # (seeded: it does stop early)
  assert sorted(aucs) == list(range(1, stop + 1))
  assert res["steps"] == stop and res["best_step"] == best_step
  assert res["valid/auc"] == aucs[best_step]
  assert latest_step(tmp_path / "best") == best_step
  assert read_json(tmp_path / run_files.TRACKER)[str(stop)]["done"]
  if aucs[stop] < aucs[best_step]:
    # Reloading mattered: the last evaluation was worse than the result.
    assert res["valid/auc"] > aucs[stop]


# ------------------------------------------------------------------ rerun
def test_rerun_of_a_finished_run_does_not_train(stopped_run):
  workdir, cfg, res = stopped_run
  before = {n: (workdir / n).read_text()
            for n in ("metrics.jsonl", run_files.TRACKER)}
  again = train(cfg, workdir)
  for name, text in before.items():
    assert (workdir / name).read_text() == text, name
  assert latest_step(workdir) == 3 and latest_step(workdir / "best") == 1
  for key in ("steps", "best_step", "valid/auc", "valid/logloss",
              "test/auc", "test/logloss", "task", "seed"):
    assert again[key] == res[key], key


def test_rerun_of_a_finished_run_returns_the_same_results(stopped_run):
  workdir, cfg, res = stopped_run
  assert train(cfg, workdir) == res
  assert read_json(workdir / run_files.RESULTS) == res


# ---------------------------------------------------------- config_compat
def old_layout(new: dict) -> dict:
  """The config.json an older flip_jax wrote for the same finetuning run.

  Written out field by field: training settings in ``finetune``, the loss
  settings as ``finetune.loss_*`` / ``finetune.l2``, no ``task``, no
  ``ckpt.every_steps``; the sections whose layout did not change are the
  run's own.
  """
  t, loss, f, c = new["train"], new["loss"], new["finetune"], new["ckpt"]
  return {
      "seed": new["seed"], "prng_impl": new["prng_impl"],
      "data": new["data"], "model": new["model"],
      "finetune": {
          "mode": f["mode"], "alpha_init": f["alpha_init"],
          "alpha_param": f["alpha_param"],
          "loss_reduction": loss["reduction"],
          "aux_weight": loss["aux_weight"], "l2": loss["l2"],
          "l2_regex": loss["l2_regex"],
          "batch_size": t["batch_size"],
          "micro_batch_size": t["micro_batch_size"],
          "num_epochs": t["num_epochs"], "patience": t["patience"],
          "eval_every_steps": t["eval_every_steps"],
          "eval_batch_size": t["eval_batch_size"],
          "max_steps": t["max_steps"],
      },
      "optim": new["optim"],
      "ckpt": {"init_from": c["init_from"], "init_step": c["init_step"],
               "keep_regex": c["keep_regex"], "drop_regex": c["drop_regex"],
               "allow_missing_regex": c["allow_missing_regex"],
               "keep": c["keep"], "async_save": c["async_save"]},
      "log_every_steps": new["log_every_steps"],
      "mesh": new["mesh"], "logical_axis_rules": new["logical_axis_rules"],
  }


def test_old_layout_config_json_still_loads(tiny_bert_dir, cache_dir,
                                            tmp_path):
  cfg = task_config("flip_finetune", "preset=tiny,mode=id", tiny_bert_dir,
                    cache_dir, **{"train.batch_size": 32})
  train(cfg, tmp_path)
  new = read_json(tmp_path / "config.json")
  run = reload.load_run(str(tmp_path))
  model, variables = run.task.model, run.variables
  test_ids = run.data.eval_splits["test"]["ids"]

  old = old_layout(new)
  assert "task" not in old and "train" not in old and "loss" not in old
  with open(tmp_path / "config.json", "w") as f:
    json.dump(old, f)
  up = config_compat.upgrade(old)
  # Old layouts counted patience in evaluations (the field came later).
  assert up["train"].pop("patience_unit") == "evals"
  assert new["train"].pop("patience_unit") == "epochs"
  for section in ("task", "train", "loss", "ckpt", "finetune"):
    assert up[section] == new[section], section

  run2 = reload.load_run(str(tmp_path))
  config, model2, variables2 = run2.config, run2.task.model, run2.variables
  assert config.task == "flip_finetune" and config.finetune.mode == "id"
  assert config.train.batch_size == 32 and config.loss.reduction == "sum"
  assert config.ckpt.every_steps == -1 and "tokenizer" not in run2.data.extra
  assert model2.config == model.config
  jax.tree.map(np.testing.assert_array_equal, variables2, variables)
  ids = np.asarray(run2.data.eval_splits["test"]["ids"][:16])
  np.testing.assert_array_equal(run2.data.eval_splits["test"]["ids"],
                                test_ids)
  np.testing.assert_array_equal(
      model2.apply(variables2, {"ids": ids}, deterministic=True)["logit"],
      model.apply(variables, {"ids": ids}, deterministic=True)["logit"])


@pytest.mark.parametrize("every,expected", [(10, 10), (-1, 25), (-4, 6),
                                            (-100, 1)])
def test_eval_every_steps_is_an_interval_or_evaluations_per_epoch(every,
                                                                  expected):
  cfg = mlc.ConfigDict({"train": {"batch_size": 4, "num_epochs": 2,
                                  "max_steps": -1, "patience": 3,
                                  "patience_unit": "evals",
                                  "eval_every_steps": every}})
  s = run_files.schedule(cfg, num_rows=100)  # 25 steps per epoch
  assert s == {"steps_per_epoch": 25, "total_steps": 50,
               "eval_every": expected, "train_rows": 100, "batch_size": 4,
               "patience_evals": 3}
