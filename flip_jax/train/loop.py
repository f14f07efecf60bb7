"""The one training loop: ``train_and_evaluate(config, workdir, task)``.

Reads top to bottom: mesh, data, model, state, restore, step, loop, then (for
a task with evaluation splits) the best checkpoint reloaded and the test
split evaluated once. The method is the ``task`` (``flip_jax.train.task``);
this file knows no method name.

* Restore priority: the workdir's own checkpoint (resume, with the data
  iterator's position and the early-stopping record) > ``ckpt.init_from``
  (params merged with the keep / drop regexes) > scratch (``task.post_init``).
* The step is one ``jax.jit`` with explicit shardings derived once from the
  logical-axis rules; the state is donated. The host syncs with the device
  only at logging, evaluation and checkpoint steps.
* Cadence (``config.train``): ``num_epochs`` over the training stream,
  capped by ``max_steps`` (-1 = no cap); evaluation on valid every
  ``eval_every_steps`` (-N = N times per epoch) and at the last step, early
  stopping after ``patience`` evaluations without a better valid AUC;
  checkpoints every ``ckpt.every_steps`` (-1 = at evaluations only), at
  every evaluation and at the last step.
* Safety: the config is validated before any work; process 0 holds the
  workdir's lock; a rerun whose config redefines the run is refused before
  anything is written (``train.workdir``); a damaged latest checkpoint is set
  aside and the previous one resumed; SIGTERM (preemption) saves a
  checkpoint at the next step and stops (``train.preemption``).
* Writes ``config.json``, ``feature_map.json``, ``metrics.jsonl`` + TensorBoard,
  ``early_stopping.json`` and ``results.json`` (evaluated tasks).
"""
from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import jax
import numpy as np
from absl import logging
from flax import linen as nn

from flip_jax import checkpoint
from flip_jax import init_merge
from flip_jax import jsonio
from flip_jax import optim
from flip_jax import sharding
from flip_jax.data import pipeline
from flip_jax.train import evaluate as eval_lib
from flip_jax.train import init as init_lib
from flip_jax.train import logging as log_lib
from flip_jax.train import model_record
from flip_jax.train import preemption
from flip_jax.train import run_files
from flip_jax.train import runtime
from flip_jax.train import state as state_lib
from flip_jax.train import steps
from flip_jax.train import validate
from flip_jax.train import workdir as workdir_lib

# Steps dispatched ahead of the last finished one: enough to keep a device
# busy, few enough that a SIGTERM (seen by Python only between device
# waits) is honoured within about this many steps, not at the next log row.
_IN_FLIGHT = 2
def _init_from(ckpt_cfg, params, model_state, shardings):
  """Params (and BatchNorm statistics) from another run's checkpoint.

  Both are merged into the fresh ones with the same keep / drop regexes, so
  a backbone's statistics travel with its weights.
  """
  step = None if ckpt_cfg.init_step < 0 else ckpt_cfg.init_step
  regexes = dict(keep=list(ckpt_cfg.keep_regex), drop=list(ckpt_cfg.drop_regex),
                 allow_missing=list(ckpt_cfg.allow_missing_regex))

  def merge(fresh, loaded, tree_shardings):
    merged = init_merge.merge_init(jax.device_get(fresh), loaded, **regexes)
    for top in merged:
      fresh = init_lib.put_subtree(fresh, (top,), merged[top], tree_shardings)
    return fresh

  params = merge(params, checkpoint.restore_params(ckpt_cfg.init_from,
                                                   step=step),
                 shardings.params)
  if model_state:
    loaded = checkpoint.restore_model_state(ckpt_cfg.init_from, step=step)
    model_state = {name: merge(fresh, loaded.get(name, {}),  # 'batch_stats'
                               shardings.model_state[name])
                   for name, fresh in model_state.items()}
  return params, model_state


def train_and_evaluate(config, workdir: str, task) -> dict[str, Any]:
  """Trains (or resumes) ``task``; returns results (or the last metrics).

  A task with evaluation splits is selected on valid AUC; its best
  checkpoint is reloaded, valid and test are evaluated once and written to
  ``results.json``, which is returned. A task without (pretraining) returns
  the metrics logged last.
  """
  validate.validate(config, task)  # before any work
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise NotADirectoryError(f"--workdir {workdir} is a file, not a folder")
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  lock = workdir_lib.WorkdirLock(workdir).acquire() if is_main else None
  try:
    workdir_lib.check_rerun(config, workdir)
    with preemption.Watcher() as watcher:
      return _train_and_evaluate(config, workdir, task, watcher)
  finally:
    if lock is not None:
      lock.release()


def _train_and_evaluate(config, workdir, task, watcher):
  is_main = jax.process_index() == 0
  t = config.train

  # ------------------------------------------------------------------ mesh
  mesh, rules = runtime.mesh_and_rules(config)

  # ------------------------------------------------------------------ data
  data = task.load_data(workdir)
  model_record.pin(workdir, *task.recorded_sections())
  fm = data.feature_map
  # Model selection on valid; a protocol without one (FLIP's 'official'
  # 90/10) selects on test, and its results say so.
  select = ("valid" if "valid" in data.eval_splits else
            "test" if "test" in data.eval_splits else None)
  evaluated = select is not None
  if select == "test":
    logging.warning("no valid split: selecting on test (results tagged "
                    "selection=test)")
  sched = run_files.schedule(config, len(data.train["label"]))
  total_steps, eval_every = sched["total_steps"], sched["eval_every"]
  data_iter = pipeline.train_iterator(
      data.train, global_batch_size=t.batch_size, seed=config.seed,
      worker_count=config.data.worker_count,
      transform=data.batch_transform)
  if is_main:
    jsonio.write_json_atomic(os.path.join(workdir, "config.json"),
                             json.loads(config.to_json_best_effort()))
    fm.save(os.path.join(workdir, "feature_map.json"))
    jsonio.write_json_atomic(os.path.join(workdir, run_files.SCHEDULE), sched)
  logging.info("task %s: %d training rows, %d steps/epoch, %d total steps",
               task.name, len(data.train["label"]), sched["steps_per_epoch"],
               total_steps)

  # ------------------------------------------------------------------ model
  task.build_model(data)
  consts = {k: jax.device_put(v, sharding.replicated(mesh))
            for k, v in data.consts.items()}
  n_dummy = int(np.prod([mesh.shape[a] for a in mesh.axis_names]))
  example = task.example_batch(data, n_dummy)

  # ------------------------------------------------------------------ state
  tx = optim.build_optimizer(config.optim,
                             steps_per_epoch=sched["steps_per_epoch"],
                             total_steps=total_steps)
  lr_schedule = optim.make_schedule(
      config.optim.schedule, base_lr=config.optim.lr,
      steps_per_epoch=sched["steps_per_epoch"], total_steps=total_steps)
  rng_impl = config.prng_impl
  init = init_lib.sharded_state_init(
      lambda rng: task.init_variables(rng, example, consts),
      lambda p, ms, r: state_lib.create_train_state(p, tx, r, ms),
      tx, mesh, rules, rng_impl=rng_impl)

  # ---------------------------------------------------------------- restore
  ckpt = checkpoint.Checkpointer(workdir, max_to_keep=config.ckpt.keep,
                                 save_interval_steps=1,
                                 async_save=config.ckpt.async_save)
  best_ckpt = (checkpoint.Checkpointer(os.path.join(workdir, "best"),
                                       max_to_keep=1, save_interval_steps=1,
                                       async_save=False)
               if evaluated else None)
  latest = ckpt.latest_step()
  tracker = {"best_auc": -1.0, "best_step": 0, "bad_evals": 0, "done": False}
  if latest is not None:
    state, latest = ckpt.restore_latest_good(init.abstract,
                                             data_iter=data_iter)
    init_rule = f"resume from step {latest}"
    tracker = run_files.load_tracker(workdir, latest) or tracker
  else:
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      state = init.init(state_lib.new_key(config.seed, rng_impl))
    params, model_state = state.params, state.model_state
    if config.ckpt.init_from:
      init_rule = f"init_from {config.ckpt.init_from}"
      params, model_state = _init_from(config.ckpt, params, model_state,
                                       init.shardings)
    else:
      put = functools.partial(init_lib.put_subtree,
                              shardings=init.shardings.params)
      params, model_state, init_rule = task.post_init(params, model_state,
                                                      put, data)
    state = state.replace(params=params, model_state=model_state)
  logging.info("init rule: %s", init_rule)
  results_path = os.path.join(workdir, run_files.RESULTS)
  finished = int(jax.device_get(state.step)) >= total_steps or tracker["done"]
  if evaluated and finished and os.path.exists(results_path):
    logging.info("%s: the run is finished; its results.json is returned",
                 workdir)
    ckpt.close()
    best_ckpt.close()
    return jsonio.read_json(results_path)
  if is_main:
    log_lib.log_startup(config, mesh, state.params)

  # ------------------------------------------------------------------- step
  train_keys = data.train_keys
  batch_sh = {k: sharding.batch_sharding(mesh, rules, _ndim(data, k, example))
              for k in train_keys}
  const_sh = {k: sharding.replicated(mesh) for k in consts}
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    step_fn = jax.jit(
        functools.partial(
            steps.train_step, task=task, rng_impl=rng_impl,
            micro_batches=runtime.num_micro_batches(t.batch_size,
                                                    t.micro_batch_size)),
        in_shardings=(init.shardings, batch_sh, const_sh),
        out_shardings=(init.shardings, sharding.replicated(mesh)),
        donate_argnums=0)
  predict = None
  if evaluated:
    predict_fn = eval_lib.make_predict_fn(
        task.predict, mesh, rules,
        state_lib.variables(init.shardings.params, init.shardings.model_state))
    predict = functools.partial(
        eval_lib.predict_split, predict_fn, keys=data.eval_keys,
        batch_size=t.eval_batch_size, mesh=mesh, rules=rules,
        transform=data.eval_transform)

  monitor = _make_monitor(task, data, mesh, rules, init.shardings, consts)

  # ------------------------------------------------------------------- loop
  step = int(jax.device_get(state.step))
  writer = log_lib.MetricWriter(workdir, resume_step=step)
  progress = log_lib.Progress(total_steps, every_steps=config.log_every_steps,
                              examples_per_step=t.batch_size, start_step=step)
  every_ckpt = config.ckpt.every_steps
  # Steps after the last row, saved with the checkpoint resumed (their row
  # then averages the same steps as an uninterrupted run's).
  history, last = (log_lib.load_pending(workdir, step) if is_main else []), {}
  t_last, step_last, compile_s = time.perf_counter(), step, None
  # The selection split's predictions at the best step: the best params
  # restored at the end give the same ones (same program, same bits), so
  # they are not computed again (None after a resume).
  best_preds = (None, None)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    while step < total_steps and not tracker["done"]:
      local = next(data_iter)
      batch = sharding.global_batch({k: local[k] for k in train_keys}, mesh,
                                    rules, batch_sh)
      t0 = time.perf_counter() if compile_s is None else None
      state, metrics = step_fn(state, batch, consts)
      if t0 is not None:
        jax.block_until_ready(metrics)
        compile_s = time.perf_counter() - t0
        logging.info("first step (compile + run) took %.1fs", compile_s)
        t_last, step_last = time.perf_counter(), step + 1
      history.append(metrics)
      if len(history) > _IN_FLIGHT:  # bounded run-ahead: SIGTERM is seen
        jax.block_until_ready(history[-1 - _IN_FLIGHT])  # within steps
      step += 1
      if watcher.preempted(step):
        if is_main:
          log_lib.save_pending(workdir, step, steps.fetch_metrics(history)
                               if history else {}, ckpt.all_steps())
        ckpt.save(step, state, data_iter=data_iter, force=True)
        ckpt.wait_until_finished()
        if evaluated and is_main:  # the early-stopping record of this step
          run_files.save_tracker(workdir, step, tracker)
        ckpt.close()
        writer.close()
        raise preemption.Preempted(
            f"preempted at step {step}: checkpoint saved in {workdir}; rerun "
            "the same command to resume")
      is_last = step == total_steps
      is_eval = evaluated and (step % eval_every == 0 or is_last)
      is_log = step % config.log_every_steps == 0 or is_last
      must_save = (is_eval or is_last
                   or (every_ckpt > 0 and step % every_ckpt == 0))
      if not (is_log or is_eval or must_save):
        continue
      scalars = {}
      if is_log or is_eval:
        scalars = steps.drain_metrics(history, step)
        history = []
        now = time.perf_counter()
        if step > step_last:
          scalars["examples_per_sec"] = ((step - step_last) * t.batch_size
                                         / (now - t_last))
        scalars["train/lr"] = float(lr_schedule(step - 1))
        scalars["compile_sec"] = compile_s
        t_last, step_last = now, step
      elif history:  # a checkpoint between two rows: its steps stay pending
        steps.drain_metrics(history, step)  # (checked finite before saving)
      if monitor is not None and is_log:
        scalars.update(monitor(state.variables))
      if is_eval:
        sel_preds = predict(state.variables, data.eval_splits[select])
        scalars.update(eval_lib.split_metrics(sel_preds, select))
        if scalars[f"{select}/auc"] > tracker["best_auc"]:
          tracker.update(best_auc=scalars[f"{select}/auc"], best_step=step,
                         bad_evals=0)
          best_ckpt.save(step, state.variables, force=True)
          best_preds = (step, sel_preds)
        else:
          tracker["bad_evals"] += 1
          if tracker["bad_evals"] >= sched["patience_evals"]:
            logging.info("early stop at step %d (best step %d, valid auc "
                         "%.4f)", step, tracker["best_step"],
                         tracker["best_auc"])
            tracker["done"] = True
      if must_save:
        ckpt.save(step, state, data_iter=data_iter, force=True)
        if is_main:
          log_lib.save_pending(workdir, step, steps.fetch_metrics(history)
                               if history else {}, ckpt.all_steps())
        if evaluated:
          ckpt.wait_until_finished()
          if is_main:
            run_files.save_tracker(workdir, step, tracker)
          t_last = time.perf_counter()
      if is_log or is_eval:
        writer.write_scalars(step, scalars)
        progress.update(step, scalars)
        last = scalars
  ckpt.wait_until_finished()
  writer.close()
  if not evaluated:
    ckpt.close()
    return last

  # -------------------------------------------------- best params, test once
  best = best_ckpt.restore(best_ckpt.latest_step(), state_lib.variables(
      init.abstract.params, init.abstract.model_state))
  results = {"task": task.name, "init_from": config.ckpt.init_from,
             "init_rule": init_rule, "best_step": tracker["best_step"],
             "steps": step, "device": jax.devices()[0].device_kind,
             "seed": config.seed}
  results["selection"] = select
  preds = {}
  for split in ("valid", "test"):
    if split in data.eval_splits:
      known = split == select and best_preds[0] == tracker["best_step"]
      preds[split] = (best_preds[1] if known
                      else predict(best, data.eval_splits[split]))
      results.update(eval_lib.split_metrics(preds[split], split))
  results.update(task.results(best))
  results["examples_per_sec"] = run_files.median_throughput(workdir)
  results["compile_sec"] = compile_s
  if is_main:
    run_files.write_predictions(
        os.path.join(workdir, run_files.PREDICTIONS), preds)
    jsonio.write_json_atomic(results_path, results)
  ckpt.close()
  best_ckpt.close()
  logging.info("results: %s", results)
  return results


def _make_monitor(task, data, mesh, rules, shardings, consts):
  """``variables -> {'heldout/...': float}`` on the task's fixed held-out
  batch (``data.monitor_batch``) in eval mode (``task.monitor``), or None
  for a task without one."""
  batch = data.monitor_batch
  if batch is None:
    return None
  batch = {k: jax.device_put(v, sharding.replicated(mesh))
           for k, v in batch.items()}
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    fn = jax.jit(task.monitor, in_shardings=(state_lib.variables(
        shardings.params, shardings.model_state), None, None))

  def run(variables):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      out = jax.device_get(fn(variables, batch, consts))
    return {f"heldout/{k}": float(v) for k, v in out.items()}
  return run


def _ndim(data, key: str, example) -> int:
  """Rank of a batch key: a column's, ``weight`` 1, else the example's."""
  if key in data.train:
    return np.ndim(data.train[key])
  if key == "weight":
    return 1
  return np.ndim(example[key])
