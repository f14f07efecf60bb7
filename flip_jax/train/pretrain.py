"""FLIP pretraining loop: ``train_and_evaluate(config, workdir)``.

Reads top to bottom: mesh, data, model, state, restore, step, loop. The step
is one ``jax.jit`` with explicit shardings derived once from the logical-axis
rules; params and optimizer state are donated. The host only syncs with the
device at logging and checkpoint intervals.
"""
from __future__ import annotations

import functools
import json
import os
import time

import jax
import numpy as np
from absl import logging
from flax import linen as nn

from flip_jax import checkpoint
from flip_jax import losses
from flip_jax import optim
from flip_jax import sharding
from flip_jax.data import masking as masking_lib
from flip_jax.data import pipeline
from flip_jax.data import prepare
from flip_jax.models import flip as flip_lib
from flip_jax.train import logging as log_lib
from flip_jax.train import setup
from flip_jax.train import state as state_lib
from flip_jax.train import steps


def max_masked_tokens(token_field: np.ndarray, num_fields: int,
                      ratio: float) -> int:
  """Largest number of MLM-masked tokens any row can get (FLIP rule).

  A row masks its m_t fields with the most tokens at worst; the fast MLM
  form sizes its per-row gather with this, so no masked token is dropped.
  """
  m_t = masking_lib.num_masked_fields(num_fields, ratio)
  tf = np.asarray(token_field)
  counts = np.stack([(tf == f).sum(axis=1) for f in range(num_fields)], 1)
  worst = np.sort(counts, axis=1)[:, -m_t:].sum(axis=1)
  return max(1, int(worst.max()))


def flip_config(config, plm_config, feature_map, max_masked: int
                ) -> flip_lib.FlipConfig:
  """Freezes the ConfigDict into the model's dataclass (model boundary)."""
  p = config.pretrain
  return flip_lib.FlipConfig(
      ctr=setup.ctr_config(config.model, feature_map),
      plm=plm_config,
      num_features=feature_map.num_features,
      num_fields=feature_map.num_fields,
      proj_dim=p.proj_dim, proj_dropout=p.proj_dropout,
      icl_enabled=p.icl.enabled, icl_weight=p.icl.weight,
      icl_temperature=p.icl.temperature, icl_normalize=p.icl.normalize,
      mlm_enabled=p.mlm.enabled, mlm_weight=p.mlm.weight,
      mlm_head_dropout=p.mlm.head_dropout, mlm_masked_only=p.mlm.masked_only,
      mlm_max_masked=max_masked,
      mtm_enabled=p.mtm.enabled, mtm_weight=p.mtm.weight, mtm_loss=p.mtm.loss,
      mtm_num_negatives=p.mtm.num_negatives, mtm_noise=p.mtm.noise,
      mtm_attn_padding_mask=p.mtm.attn_padding_mask,
      mtm_attn_scale=p.mtm.attn_scale, mtm_field_dim=p.mtm.field_dim,
      share_unmasked_pass=p.share_unmasked_pass,
      dtype=setup.DTYPES[config.model.dtype],
      plm_remat=config.model.plm.remat)


def dummy_batch(columns, n: int, **kwargs) -> dict[str, np.ndarray]:
  """A batch of the real shapes (n rows) used for init / eval_shape."""
  it = pipeline.train_iterator(columns, global_batch_size=n, seed=0,
                               process_index=0, process_count=1,
                               prefetch_buffer_size=0, **kwargs)
  return next(it)


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
  """Runs (or resumes) FLIP pretraining; returns the last logged metrics."""
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0

  # ------------------------------------------------------------------ mesh
  mesh, rules = setup.mesh_and_rules(config)

  # ------------------------------------------------------------------ data
  plm_module, plm_params, tokenizer = setup.load_plm(config.model)

  def load_data():
    prepared = prepare.load_dataset(config.data,
                                    setup.cache_root(config, workdir))
    return prepared, prepare.tokenize_dataset(prepared, tokenizer,
                                              config.data.max_length)
  prepared, tok = setup.main_process_first(load_data, "data")
  fm = prepared.feature_map
  # Pretraining sees train + valid (no labels), as the official 90 %.
  columns = setup.array_columns(
      setup.concat_columns(tok["train"], *( [tok["valid"]] if "valid" in tok
                                           else [])))
  num_rows = len(columns["ids"])
  batch_size = config.pretrain.batch_size
  if batch_size % jax.process_count():
    raise ValueError(f"pretrain.batch_size={batch_size} is not divisible by "
                     f"the {jax.process_count()} processes")
  steps_per_epoch = pipeline.steps_per_epoch(num_rows, batch_size)
  if steps_per_epoch < 1:
    raise ValueError(f"pretrain.batch_size={batch_size} exceeds the "
                     f"{num_rows} pretraining rows")
  total_steps = (config.total_steps if config.total_steps > 0
                 else config.pretrain.num_epochs * steps_per_epoch)
  mask_kwargs = dict(
      masking=masking_lib.MaskingConfig.from_config(config.data),
      mask_token_id=tokenizer.mask_token_id, feature_map=fm,
      vocab_size=len(tokenizer),
      special_token_ids=list(tokenizer.all_special_ids))
  data_iter = pipeline.train_iterator(
      columns, global_batch_size=batch_size, seed=config.seed,
      worker_count=config.data.worker_count, **mask_kwargs)
  if is_main:
    checkpoint.write_json_atomic(os.path.join(workdir, "config.json"),
                                 json.loads(config.to_json_best_effort()))
    fm.save(os.path.join(workdir, "feature_map.json"))
  logging.info("pretraining rows %d, %d steps/epoch, %d total steps",
               num_rows, steps_per_epoch, total_steps)

  # ------------------------------------------------------------------ model
  max_masked = config.pretrain.mlm.max_masked
  if max_masked <= 0:
    if config.data.mlm_rule == "field":
      max_masked = max_masked_tokens(columns["token_field"], fm.num_fields,
                                     config.data.text_mask_ratio)
    else:
      max_masked = max(1, int(np.ceil(1.5 * config.data.token_mask_prob
                                      * config.data.max_length)))
    max_masked = min(max_masked, config.data.max_length)
    logging.info("MLM head on at most %d masked positions per row", max_masked)
  model = flip_lib.FlipPretrainModel(
      flip_config(config, plm_module.config, fm, max_masked))
  consts = {k: jax.device_put(v, sharding.replicated(mesh))
            for k, v in flip_lib.make_consts(fm).items()}
  n_dummy = int(np.prod([mesh.shape[a] for a in mesh.axis_names]))
  example = {k: v for k, v in dummy_batch(
      columns, n_dummy, **mask_kwargs).items() if k in steps.PRETRAIN_KEYS}

  def init_variables(rng):
    return model.init({"params": rng, "dropout": rng, "noise": rng}, example,
                      consts)

  # ------------------------------------------------------------------ state
  tx = optim.build_optimizer(config.optim, steps_per_epoch=steps_per_epoch,
                             total_steps=total_steps)
  rng_impl = config.get("prng_impl")
  init = setup.sharded_state_init(
      init_variables,
      lambda p, ms, r: state_lib.create_train_state(p, tx, r, ms),
      tx, mesh, rules, rng_impl=rng_impl)

  lr_schedule = optim.make_schedule(
      config.optim.schedule, base_lr=config.optim.lr,
      steps_per_epoch=steps_per_epoch, total_steps=total_steps)

  # ---------------------------------------------------------------- restore
  ckpt = checkpoint.Checkpointer(
      workdir, max_to_keep=config.ckpt.keep,
      save_interval_steps=config.ckpt.every_steps,
      async_save=config.ckpt.async_save)
  latest = ckpt.latest_step()
  if latest is not None:
    logging.info("init rule: resuming from %s/checkpoints/%d", workdir, latest)
    state = ckpt.restore(latest, init.abstract, data_iter=data_iter)
  else:
    logging.info("init rule: PLM from %s, the rest from scratch",
                 config.model.plm.name)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      state = init.init(state_lib.new_key(config.seed, rng_impl))
    params = setup.put_subtree(state.params, ("plm",), plm_params,
                               init.shardings.params)
    if "nce" in params:
      bias = np.asarray(losses.nce_bias_init(np.asarray(fm.counts)))
      params = setup.put_subtree(params, ("nce", "bias"), bias,
                                 init.shardings.params)
    state = state.replace(params=params)
  if is_main:
    log_lib.log_startup(config, mesh, state.params)

  # ------------------------------------------------------------------- step
  batch_sh = {k: sharding.batch_sharding(mesh, rules, np.ndim(v))
              for k, v in example.items()}
  const_sh = {k: sharding.replicated(mesh) for k in consts}
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    train_step = jax.jit(
        functools.partial(steps.pretrain_step, model=model, tx=tx,
                          rng_impl=rng_impl,
                          micro_batches=setup.num_micro_batches(
                              batch_size, config.pretrain.get(
                                  "micro_batch_size", 0), "pretrain")),
        in_shardings=(init.shardings, batch_sh, const_sh),
        out_shardings=(init.shardings, sharding.replicated(mesh)),
        donate_argnums=0)

  # ------------------------------------------------------------------- loop
  step = int(jax.device_get(state.step))
  writer = log_lib.MetricWriter(workdir, resume_step=step)
  progress = log_lib.Progress(total_steps, every_steps=config.log_every_steps,
                              examples_per_step=batch_size, start_step=step)
  history, last = [], {}
  t_last, step_last = time.perf_counter(), step
  compile_s = None
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    while step < total_steps:
      local = next(data_iter)
      batch = sharding.global_batch({k: local[k] for k in batch_sh}, mesh,
                                    rules, batch_sh)
      t0 = time.perf_counter() if compile_s is None else None
      state, metrics = train_step(state, batch, consts)
      if t0 is not None:
        jax.block_until_ready(metrics)
        compile_s = time.perf_counter() - t0
        logging.info("first step (compile + run) took %.1fs", compile_s)
        t_last, step_last = time.perf_counter(), step + 1
      history.append(metrics)
      step += 1
      must_save = step % config.ckpt.every_steps == 0 or step == total_steps
      if step % config.log_every_steps == 0 or step == total_steps or must_save:
        last = steps.drain_metrics(history, step)
        history = []
        now = time.perf_counter()
        if step > step_last:
          last["examples_per_sec"] = ((step - step_last) * batch_size
                                      / (now - t_last))
        last["train/lr"] = float(lr_schedule(step - 1))
        last["compile_sec"] = compile_s
        if step % config.log_every_steps == 0 or step == total_steps:
          writer.write_scalars(step, last)
          progress.update(step, last)
        t_last, step_last = now, step
      if must_save:
        ckpt.save(step, state, data_iter=data_iter, force=step == total_steps)
  ckpt.wait_until_finished()
  ckpt.close()
  writer.close()
  return last
