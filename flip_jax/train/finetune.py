"""CTR finetuning loop (FLIP_ID / FLIP_PLM / FLIP joint and the baselines).

``train_and_evaluate(config, workdir)`` reads top to bottom: mesh, data,
model, state, restore (workdir checkpoint > init_from > scratch), step, loop
with validation-based early stopping, then the best checkpoint is reloaded
and the test split is evaluated once. Writes ``results.json``.
"""
from __future__ import annotations

import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
from absl import logging
from flax import linen as nn

from flip_jax import checkpoint
from flip_jax import losses
from flip_jax import optim
from flip_jax import sharding
from flip_jax.data import pipeline
from flip_jax.data import prepare
from flip_jax.data import features
from flip_jax.models import ctr as ctr_lib
from flip_jax.models import finetune as ft_lib
from flip_jax.train import evaluate as eval_lib
from flip_jax.train import logging as log_lib
from flip_jax.train import microbatch
from flip_jax.train import setup
from flip_jax.train import state as state_lib
from flip_jax.train import steps

TRACKER = "early_stopping.json"


def resolve_model_config(config) -> mlc.ConfigDict:
  """The model section; with init_from, the pretraining run's architecture."""
  model = mlc.ConfigDict(config.model.to_dict())
  if not config.ckpt.init_from:
    return model
  path = os.path.join(config.ckpt.init_from, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"ckpt.init_from={config.ckpt.init_from!r}: no config.json there; "
        "is it a pretraining workdir?")
  with open(path) as f:
    pre = json.load(f)["model"]
  for part in ("ctr", "plm"):
    if pre[part] != model[part].to_dict():
      logging.info("init_from: using the pretraining run's model.%s %s",
                   part, pre[part])
  return mlc.ConfigDict(pre)


def data_loss(params, model_state, batch, rngs, *, model, cfg, norm=None):
  """BCE of the prediction (+ both branches' BCE for joint), and metrics.

  norm=None: the configured reduction over ``batch``. Otherwise ``batch`` is
  one micro-batch and the result is its share of the global batch's loss:
  the sum over its rows divided by ``norm`` (``bce_norm`` of the global
  batch).

  Returns:
    (loss, (metrics, updated model_state)); ``model_state`` holds a
    BatchNorm backbone's statistics ({} otherwise).
  """
  out, model_state = state_lib.apply_train(
      model, params, model_state, batch, deterministic=False, rngs=rngs)
  y, w = batch["label"], batch["weight"]
  red = cfg.loss_reduction if norm is None else "sum"
  scale = 1.0 if norm is None else 1.0 / norm
  bce = scale * losses.bce_with_logits(out["logit"], y, w, reduction=red)
  total, metrics = bce, {"bce": bce}
  if cfg.mode == "joint":
    aux = scale * (losses.bce_with_logits(out["ctr/logit"], y, w, reduction=red)
                   + losses.bce_with_logits(out["txt/logit"], y, w,
                                            reduction=red))
    total = total + cfg.aux_weight * aux
    metrics["alpha"] = out["alpha"]
  return total, (metrics, model_state)


def bce_norm(batch, cfg) -> jax.Array:
  """What a summed BCE is divided by to give the configured reduction."""
  if cfg.loss_reduction != "mean":
    return jnp.ones((), jnp.float32)
  return losses.weight_denominator(batch["weight"])


def loss_fn(params, model_state, batch, rngs, *, model, cfg):
  """BCE (mix + branches for joint) + explicit L2 on the tables."""
  total, (metrics, model_state) = data_loss(params, model_state, batch, rngs,
                                            model=model, cfg=cfg)
  total, metrics = _add_l2(params, total, metrics, cfg)
  return total, (metrics, model_state)


def _add_l2(params, total, metrics, cfg):
  if cfg.l2 > 0:
    l2 = ctr_lib.l2_penalty(params, {r: cfg.l2 for r in cfg.l2_regex})
    total = total + l2
    metrics["l2"] = l2
  metrics["loss"] = total
  return total, metrics


def micro_batched_grads(params, batch, rngs, *, model, cfg, num: int,
                        model_state=None):
  """Loss metrics and grads of the global batch, over `num` micro-batches.

  Returns (metrics, grads, model_state); BatchNorm statistics are updated
  micro-batch after micro-batch (each normalised with its own statistics).
  """
  norm = bce_norm(batch, cfg)

  def chunk(p, ms, mb, i):
    r = {k: jax.random.fold_in(v, i) for k, v in rngs.items()}
    total, (metrics, ms) = data_loss(p, ms, mb, r, model=model, cfg=cfg,
                                     norm=norm)
    metrics.pop("alpha", None)  # a parameter: read once below
    metrics["data_loss"] = total
    return total, (metrics, ms)

  metrics, grads, model_state = microbatch.accumulate(
      chunk, params, microbatch.split(batch, num), num,
      state=model_state or {})
  if cfg.mode == "joint":
    metrics["alpha"] = model.apply(state_lib.variables(params, model_state),
                                   method="alpha")
  if cfg.l2 > 0:
    (_, m2), g2 = jax.value_and_grad(
        lambda p: _add_l2(p, jnp.zeros((), jnp.float32), {}, cfg),
        has_aux=True)(params)
    grads = jax.tree.map(jnp.add, grads, g2)
    metrics.update(m2)
  metrics["loss"] = metrics.pop("data_loss") + metrics.get("l2", 0.0)
  return metrics, grads, model_state


def train_step(state, batch, *, model, tx, cfg, micro_batches: int = 1,
               rng_impl: str | None = None):
  rngs = {"dropout": state_lib.step_key(state, impl=rng_impl)}
  if micro_batches > 1:
    metrics, grads, model_state = micro_batched_grads(
        state.params, batch, rngs, model=model, cfg=cfg, num=micro_batches,
        model_state=state.model_state)
  else:
    grad_fn = jax.value_and_grad(
        functools.partial(loss_fn, model=model, cfg=cfg), has_aux=True)
    (_, (metrics, model_state)), grads = grad_fn(
        state.params, state.model_state, batch, rngs)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {f"train/{k}": v for k, v in metrics.items()}
  metrics["train/grad_norm"] = optax.global_norm(grads)
  return state.replace(step=state.step + 1, params=params,
                       opt_state=opt_state, model_state=model_state), metrics


def build_model(cfg, model_cfg, feature_map,
                plm_config) -> ft_lib.FlipCtrModel:
  """The finetuning model of ``finetune`` config ``cfg`` (both loops)."""
  return ft_lib.FlipCtrModel(ft_lib.FinetuneConfig(
      mode=cfg.mode,
      ctr=(setup.ctr_config(model_cfg, feature_map) if cfg.mode != "plm"
           else None),
      plm=plm_config, alpha_init=cfg.alpha_init, alpha_param=cfg.alpha_param,
      dtype=setup.DTYPES[model_cfg.dtype],
      plm_remat=model_cfg.plm.get("remat", False)))


def _init_from(ckpt_cfg, params, model_state, shardings):
  """Params (and BatchNorm statistics) from a pretraining run (rule 2).

  Both are merged into the fresh ones with the same keep / drop regexes, so
  a backbone's statistics travel with its weights.
  """
  step = None if ckpt_cfg.init_step < 0 else ckpt_cfg.init_step
  regexes = dict(keep=list(ckpt_cfg.keep_regex), drop=list(ckpt_cfg.drop_regex),
                 allow_missing=list(ckpt_cfg.allow_missing_regex))

  def merge(fresh, loaded, tree_shardings):
    merged = checkpoint.merge_init(jax.device_get(fresh), loaded, **regexes)
    for top in merged:
      fresh = setup.put_subtree(fresh, (top,), merged[top], tree_shardings)
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


def _load_tracker(workdir, step):
  path = os.path.join(workdir, TRACKER)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f).get(str(step))


def _save_tracker(workdir, step, tracker):
  path = os.path.join(workdir, TRACKER)
  data = {}
  if os.path.exists(path):
    with open(path) as f:
      data = json.load(f)
  data = {k: v for k, v in data.items() if int(k) <= step}
  data[str(step)] = tracker
  checkpoint.write_json_atomic(path, data)


def train_and_evaluate(config, workdir: str) -> dict:
  """Finetunes (or resumes), selects on valid AUC, evaluates test once."""
  os.makedirs(workdir, exist_ok=True)
  cfg = config.finetune
  is_main = jax.process_index() == 0
  results_path = os.path.join(workdir, "results.json")

  # ------------------------------------------------------------------ mesh
  mesh, rules = setup.mesh_and_rules(config)

  # ------------------------------------------------------------------ data
  model_cfg = resolve_model_config(config)
  prepared = setup.main_process_first(
      lambda: prepare.load_dataset(config.data,
                                   setup.cache_root(config, workdir)), "data")
  fm = prepared.feature_map
  if config.ckpt.init_from:
    pre_fm = features.FeatureMap.load(
        os.path.join(config.ckpt.init_from, "feature_map.json"))
    if (pre_fm.num_features != fm.num_features
        or list(pre_fm.field_names) != list(fm.field_names)):
      raise ValueError(
          "init_from: the pretraining run's feature_map.json differs from this "
          "run's data (same dataset and data config needed)")
  uses_text = cfg.mode in ("plm", "joint")
  plm_params = plm_config = None
  if uses_text:
    plm_module, plm_params, tokenizer = setup.load_plm(model_cfg)
    plm_config = plm_module.config
    splits = setup.main_process_first(
        lambda: prepare.tokenize_dataset(prepared, tokenizer,
                                         config.data.max_length), "tokens")
  else:
    splits = prepared.splits
  splits = {k: setup.array_columns(v) for k, v in splits.items()}
  keys = eval_lib.model_keys(cfg.mode)
  train_keys = keys + ("label", "weight")
  bs = cfg.batch_size
  steps_per_epoch = pipeline.steps_per_epoch(len(splits["train"]["ids"]), bs)
  total_steps = cfg.num_epochs * steps_per_epoch
  if cfg.max_steps > 0:
    total_steps = min(total_steps, cfg.max_steps)
  eval_every = cfg.eval_every_steps if cfg.eval_every_steps > 0 else steps_per_epoch
  data_iter = pipeline.train_iterator(
      splits["train"], global_batch_size=bs, seed=config.seed,
      worker_count=config.data.worker_count)
  if is_main:
    checkpoint.write_json_atomic(os.path.join(workdir, "config.json"),
                                 json.loads(config.to_json_best_effort()))
    fm.save(os.path.join(workdir, "feature_map.json"))

  # ------------------------------------------------------------------ model
  model = build_model(cfg, model_cfg, fm, plm_config)
  n_dummy = int(np.prod([mesh.shape[a] for a in mesh.axis_names]))
  example = {k: np.asarray(v[:n_dummy]) for k, v in splits["train"].items()
             if k in keys}

  def init_variables(rng):
    return model.init({"params": rng, "dropout": rng}, example)

  # ------------------------------------------------------------------ state
  tx = optim.build_optimizer(config.optim, steps_per_epoch=steps_per_epoch,
                             total_steps=total_steps)
  rng_impl = config.get("prng_impl")
  init = setup.sharded_state_init(
      init_variables,
      lambda p, ms, r: state_lib.create_train_state(p, tx, r, ms),
      tx, mesh, rules, rng_impl=rng_impl)

  # ---------------------------------------------------------------- restore
  # Priority (flip_jax.checkpoint): workdir checkpoint > init_from > scratch.
  ckpt = checkpoint.Checkpointer(workdir, max_to_keep=config.ckpt.keep,
                                 save_interval_steps=1,
                                 async_save=config.ckpt.async_save)
  best_ckpt = checkpoint.Checkpointer(os.path.join(workdir, "best"),
                                      max_to_keep=1, save_interval_steps=1,
                                      async_save=False)
  latest = ckpt.latest_step()
  tracker = {"best_auc": -1.0, "best_step": 0, "bad_evals": 0, "done": False}
  init_rule = "scratch"
  if latest is not None:
    init_rule = f"resume from step {latest}"
    state = ckpt.restore(latest, init.abstract, data_iter=data_iter)
    tracker = _load_tracker(workdir, latest) or tracker
  else:
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      state = init.init(state_lib.new_key(config.seed, rng_impl))
    params, model_state = state.params, state.model_state
    if config.ckpt.init_from:
      init_rule = f"init_from {config.ckpt.init_from}"
      params, model_state = _init_from(config.ckpt, params, model_state,
                                       init.shardings)
    elif uses_text:
      init_rule = f"scratch; PLM from public weights {model_cfg.plm.name}"
      params = setup.put_subtree(params, ("plm",), plm_params,
                                 init.shardings.params)
    state = state.replace(params=params, model_state=model_state)
  logging.info("init rule: %s", init_rule)
  if is_main:
    log_lib.log_startup(config, mesh, state.params)

  # ------------------------------------------------------------------- step
  # `weight` is added by the pipeline (1-D, like `label`).
  batch_sh = {k: sharding.batch_sharding(
      mesh, rules, np.ndim(splits["train"][k]) if k != "weight" else 1)
              for k in train_keys}
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    step_fn = jax.jit(
        functools.partial(train_step, model=model, tx=tx, cfg=cfg,
                          rng_impl=rng_impl,
                          micro_batches=setup.num_micro_batches(
                              bs, cfg.get("micro_batch_size", 0),
                              "finetune")),
        in_shardings=(init.shardings, batch_sh),
        out_shardings=(init.shardings, sharding.replicated(mesh)),
        donate_argnums=0)
  predict_fn = eval_lib.make_predict_fn(
      model, mesh, rules, state_lib.variables(init.shardings.params,
                                              init.shardings.model_state))
  evaluate = functools.partial(
      eval_lib.evaluate, predict_fn, keys=keys, batch_size=cfg.eval_batch_size,
      mesh=mesh, rules=rules)

  # ------------------------------------------------------------------- loop
  step = int(jax.device_get(state.step))
  writer = log_lib.MetricWriter(workdir, resume_step=step)
  progress = log_lib.Progress(total_steps, every_steps=config.log_every_steps,
                              examples_per_step=bs, start_step=step)
  history = []
  t_last, step_last, compile_s = time.perf_counter(), step, None
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    while step < total_steps and not tracker["done"]:
      local = next(data_iter)
      batch = sharding.global_batch({k: local[k] for k in train_keys}, mesh,
                                    rules, batch_sh)
      t0 = time.perf_counter() if compile_s is None else None
      state, metrics = step_fn(state, batch)
      if t0 is not None:
        jax.block_until_ready(metrics)
        compile_s = time.perf_counter() - t0
        t_last, step_last = time.perf_counter(), step + 1
      history.append(metrics)
      step += 1
      is_eval = step % eval_every == 0 or step == total_steps
      if step % config.log_every_steps == 0 or is_eval:
        scalars = steps.drain_metrics(history, step)
        history = []
        now = time.perf_counter()
        if step > step_last:
          scalars["examples_per_sec"] = (step - step_last) * bs / (now - t_last)
        t_last, step_last = now, step
        if is_eval:
          scalars.update(evaluate(state.variables, splits["valid"],
                                  prefix="valid"))
          if scalars["valid/auc"] > tracker["best_auc"]:
            tracker.update(best_auc=scalars["valid/auc"], best_step=step,
                           bad_evals=0)
            best_ckpt.save(step, state.variables, force=True)
          else:
            tracker["bad_evals"] += 1
            if tracker["bad_evals"] >= cfg.patience:
              logging.info("early stop at step %d (best step %d, valid auc "
                           "%.4f)", step, tracker["best_step"],
                           tracker["best_auc"])
              tracker["done"] = True
          ckpt.save(step, state, data_iter=data_iter, force=True)
          ckpt.wait_until_finished()
          if is_main:
            _save_tracker(workdir, step, tracker)
          t_last = time.perf_counter()
        writer.write_scalars(step, scalars)
        progress.update(step, scalars)

  # -------------------------------------------------- best params, test once
  ckpt.wait_until_finished()
  best_step = tracker["best_step"]
  best = best_ckpt.restore(best_ckpt.latest_step(), state_lib.variables(
      init.abstract.params, init.abstract.model_state))
  results = {"init_from": config.ckpt.init_from, "init_rule": init_rule,
             "mode": cfg.mode, "best_step": best_step,
             "device": jax.devices()[0].device_kind,
             "seed": config.seed}
  results.update(evaluate(best, splits["valid"], prefix="valid"))
  results.update(evaluate(best, splits["test"], prefix="test"))
  if cfg.mode == "joint":
    results["alpha"] = float(jax.device_get(best["params"]["alpha"]))
  results["examples_per_sec"] = _throughput(workdir)
  results["compile_sec"] = compile_s
  if is_main:
    checkpoint.write_json_atomic(results_path, results)
  ckpt.close()
  best_ckpt.close()
  writer.close()
  logging.info("results: %s", results)
  return results


def _throughput(workdir: str) -> float:
  """Median examples/s over the run's logged intervals (metrics.jsonl)."""
  path = os.path.join(workdir, "metrics.jsonl")
  vals = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        rec = json.loads(line)
        if "examples_per_sec" in rec:
          vals.append(rec["examples_per_sec"])
  return float(np.median(vals)) if vals else 0.0


def load_finetuned(workdir: str, *, data_overrides: dict | None = None):
  """Rebuilds a finetuned model and its best params from a workdir.

  Args:
    workdir: a finetuning run directory (config.json, best/ checkpoint).
    data_overrides: data config fields to replace (e.g. dataset, data_dir).

  Returns:
    (config, model, variables (host numpy ``{'params': ...}``, plus
    ``batch_stats`` for a BatchNorm backbone), tokenizer or None, prepared).
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{workdir}: no config.json (not a finetune run?)")
  with open(path) as f:
    config = mlc.ConfigDict(json.load(f))
  for k, v in (data_overrides or {}).items():
    config.data[k] = v
  cfg = config.finetune
  model_cfg = resolve_model_config(config)
  prepared = prepare.load_dataset(config.data, setup.cache_root(config, workdir))
  saved_fm = features.FeatureMap.load(os.path.join(workdir, "feature_map.json"))
  if saved_fm.num_features != prepared.feature_map.num_features:
    raise ValueError(f"{workdir}: feature map of the data differs from the "
                     "run's feature_map.json")
  tokenizer = plm_config = None
  if cfg.mode in ("plm", "joint"):
    plm_module, _, tokenizer = setup.load_plm(model_cfg)
    plm_config = plm_module.config
  model = build_model(cfg, model_cfg, prepared.feature_map, plm_config)
  best_dir = os.path.join(workdir, "best")
  best_ckpt = checkpoint.Checkpointer(best_dir, max_to_keep=1,
                                      save_interval_steps=1, async_save=False)
  step = best_ckpt.latest_step()
  if step is None:
    raise FileNotFoundError(f"{best_dir}: no best checkpoint (run unfinished?)")
  variables = checkpoint.restore_variables(best_dir, step=step)
  best_ckpt.close()
  return config, model, variables, tokenizer, prepared
