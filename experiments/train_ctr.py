"""Trains an ID-based CTR backbone from scratch (FLIP.md 3, 6.1, 7, 10).

  python -m experiments.train_ctr --workdir runs/dcnv2_ml1m \
    --config experiments/configs/ctr.py:dataset=ml-1m,model=dcnv2 \
    --config.data.data_dir=../shared/data/ml-1m

The whole training split lives on device; one jitted call runs a chunk of
steps (`lax.scan` over pre-shuffled index batches, donated state), so there
is no host round-trip per step.  Each epoch is shuffled with
``jax.random.permutation(fold_in(seed, epoch))``; the last incomplete batch
is dropped.  Validation runs every `train.eval_every_steps` (or each epoch),
AUC / LogLoss are exact over the whole split (padding excluded), early
stopping watches valid AUC (patience in evaluations), the best params are
kept in host memory and reloaded, and the test split is evaluated once.
Writes config.json, feature_map.json, metrics.jsonl and results.json to the
workdir; rerunning on a workdir that has results.json only reports them.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

from absl import app
from absl import flags
from absl import logging
import flax
from flax import linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
from ml_collections import config_flags
import numpy as np
import optax
from tensorboardX import SummaryWriter

from flip_jax import metrics
from flip_jax import sharding
from flip_jax.data import prepare
from flip_jax.models import ctr

# Guarded so that importing several entry points (e.g. in one test process)
# does not define the same flag twice.
if "config" not in flags.FLAGS:
  config_flags.DEFINE_config_file("config", None, "Config file.",
                                  lock_config=True)
if "workdir" not in flags.FLAGS:
  flags.DEFINE_string("workdir", None, "Run directory.")


# ----------------------------------------------------------------- pieces --
def bce_with_logits(z: jax.Array, y: jax.Array) -> jax.Array:
  """Per-example binary cross-entropy of logits z for labels y (stable)."""
  z = z.astype(jnp.float32)
  return jnp.maximum(z, 0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z)))


def make_loss_fn(model: nn.Module, l2_coeffs: dict[str, float],
                 reduction: str) -> Callable:
  """loss(params, model_state, ids, labels, rng) -> (loss, aux)."""
  if reduction not in ("sum", "mean"):
    raise ValueError(f"optim.loss_reduction {reduction!r}: expected sum|mean")

  def loss_fn(params, model_state, ids, labels, rng):
    out, new_state = model.apply(
        {"params": params, **model_state}, ids, deterministic=False,
        mutable=list(model_state), rngs={"dropout": rng})
    bce = bce_with_logits(out["logit"], labels)
    bce = bce.sum() if reduction == "sum" else bce.mean()
    l2 = ctr.l2_penalty(params, l2_coeffs)
    return bce + l2, {"bce": bce, "l2": l2, "model_state": new_state}

  return loss_fn


def make_train_chunk(model: nn.Module, tx: optax.GradientTransformation,
                     l2_coeffs: dict[str, float], reduction: str,
                     batch_sharding: NamedSharding | None = None) -> Callable:
  """Builds chunk(state, ids, labels, idx [k, B]) -> (state, sums).

  `state` = {params, opt_state, model_state, step, rng}; `ids`/`labels` are
  the whole split on device; each row of `idx` is one batch of row indices.
  `sums` holds the summed loss / bce / l2 over the k steps.  Not jitted.
  """
  grad_fn = jax.value_and_grad(make_loss_fn(model, l2_coeffs, reduction),
                               has_aux=True)

  def chunk(state, ids_all, labels_all, idx):
    def step(state, batch_idx):
      ids = jnp.take(ids_all, batch_idx, axis=0)
      labels = jnp.take(labels_all, batch_idx, axis=0)
      if batch_sharding is not None:
        ids = jax.lax.with_sharding_constraint(
            ids, NamedSharding(batch_sharding.mesh,
                               P(batch_sharding.spec[0], None)))
        labels = jax.lax.with_sharding_constraint(labels, batch_sharding)
      rng = jax.random.fold_in(state["rng"], state["step"])
      (loss, aux), grads = grad_fn(state["params"], state["model_state"], ids,
                                   labels, rng)
      updates, opt_state = tx.update(grads, state["opt_state"],
                                     state["params"])
      new = dict(state, params=optax.apply_updates(state["params"], updates),
                 opt_state=opt_state, model_state=aux["model_state"],
                 step=state["step"] + 1)
      return new, jnp.stack([loss, aux["bce"], aux["l2"]])

    state, per_step = jax.lax.scan(step, state, idx)
    return state, per_step.sum(axis=0)

  return chunk


def make_predict(model: nn.Module) -> Callable:
  """predict(params, model_state, ids [nb, EB, F]) -> probs [nb, EB]."""

  def predict(params, model_state, ids):
    def one(batch):
      out = model.apply({"params": params, **model_state}, batch)
      return jax.nn.sigmoid(out["logit"].astype(jnp.float32))
    return jax.lax.map(one, ids)

  return predict


def init_state(model: nn.Module, tx: optax.GradientTransformation, mesh,
               rules, num_fields: int, init_key: jax.Array,
               dropout_key: jax.Array) -> dict[str, Any]:
  """Initialises {params, opt_state, model_state, step, rng} on the mesh.

  Params get the shardings their logical axis names resolve to under
  `rules` (replicated where a dimension does not divide); the optimizer
  state follows the params.
  """
  dummy = jnp.zeros((2, num_fields), jnp.int32)
  init_fn = lambda k: model.init(k, dummy)
  abstract = jax.eval_shape(init_fn, init_key)
  var_sh = sharding.with_divisible_fallback(
      sharding.logical_to_sharding(abstract, mesh, rules), abstract, mesh)
  variables = jax.jit(lambda k: nn.meta.unbox(init_fn(k)),
                      out_shardings=var_sh)(init_key)
  params = variables["params"]
  repl = sharding.replicated(mesh)
  state = {"params": params, "opt_state": jax.jit(tx.init)(params),
           "model_state": {k: v for k, v in variables.items()
                           if k != "params"},
           "step": jnp.zeros((), jnp.int32), "rng": dropout_key}
  # Leaves created without a sharded input (step, rng, Adam's count) would
  # sit on one device; replicate them over the mesh.
  on_mesh = lambda x: (isinstance(x.sharding, NamedSharding)
                       and x.sharding.mesh == mesh)
  return jax.tree.map(lambda x: x if on_mesh(x) else jax.device_put(x, repl),
                      state)


def pad_batches(x: np.ndarray, batch: int) -> tuple[np.ndarray, int]:
  """Pads rows to a multiple of `batch` (repeating row 0), reshapes."""
  n = x.shape[0]
  nb = max(1, -(-n // batch))
  pad = nb * batch - n
  if pad:
    x = np.concatenate([x, np.repeat(x[:1], pad, axis=0)])
  return x.reshape((nb, batch) + x.shape[1:]), n


def check_split(name: str, cols: dict, num_features: int, num_fields: int):
  """Validates a split's ids/labels with messages naming split and field."""
  for key in ("ids", "label"):
    if key not in cols:
      raise ValueError(f"data split {name!r}: missing column {key!r}")
  ids, label = cols["ids"], cols["label"]
  if ids.ndim != 2 or ids.shape[1] != num_fields:
    raise ValueError(f"data split {name!r}: ids shape {ids.shape}, expected "
                     f"[n, {num_fields}]")
  if ids.shape[0] == 0:
    raise ValueError(f"data split {name!r}: no rows")
  bad = (ids < 0) | (ids >= num_features)
  if bad.any():
    r, f = np.argwhere(bad)[0]
    raise ValueError(f"data split {name!r}: row {r} field {f} has id "
                     f"{ids[r, f]} outside [0, {num_features})")
  if not np.isin(label, (0.0, 1.0)).all():
    raise ValueError(f"data split {name!r}: labels must be 0/1")


# ------------------------------------------------------------------ train --
def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Runs one from-scratch training; returns (and writes) results.json."""
  os.makedirs(workdir, exist_ok=True)
  results_path = os.path.join(workdir, "results.json")
  if os.path.exists(results_path):
    with open(results_path) as f:
      results = json.load(f)
    logging.info("workdir %s already finished: %s", workdir, results)
    return results
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  logging.info("config:\n%s", config)
  logging.info("jax %s, flax %s, optax %s; devices %s", jax.__version__,
               flax.__version__, optax.__version__, jax.devices())

  # --- data: the whole splits, on device.
  cache_root = config.data.cache_dir or os.path.join(workdir, "data_cache")
  prepared = prepare.load_dataset(config.data, cache_root)
  fmap = prepared.feature_map
  fmap.save(os.path.join(workdir, "feature_map.json"))
  for split in ("train", "valid", "test"):
    if split not in prepared.splits:
      raise ValueError(f"data: split {split!r} missing (protocol "
                       f"{config.data.protocol!r}); train_ctr needs valid")
    check_split(split, prepared.splits[split], fmap.num_features,
                fmap.num_fields)
  train = prepared.splits["train"]
  n_train = train["ids"].shape[0]
  bsz = config.train.batch_size
  steps_per_epoch = n_train // bsz
  if steps_per_epoch == 0:
    raise ValueError(f"train split has {n_train} rows < batch {bsz}")

  # --- mesh and model.
  mesh = sharding.make_mesh([tuple(a) for a in config.mesh])
  rules = sharding.rules_from_config(config.logical_axis_rules)
  cfg = ctr.CTRConfig.from_config(config.model.ctr, fmap.num_features,
                                  fmap.num_fields)
  model = ctr.CTRClassifier(cfg)
  logging.info("mesh %s; rules %s", dict(mesh.shape), rules)
  logging.info("model %s: rep_dim %d, N=%d, F=%d", cfg.name, ctr.rep_dim(cfg),
               fmap.num_features, fmap.num_fields)

  # --- state: sharded init.
  root = jax.random.key(config.seed)
  init_key, dropout_key, shuffle_key = jax.random.split(root, 3)
  tx = optax.adam(config.optim.lr, config.optim.b1, config.optim.b2,
                  config.optim.eps)
  state = init_state(model, tx, mesh, rules, fmap.num_fields, init_key,
                     dropout_key)
  params = state["params"]
  repl = sharding.replicated(mesh)
  counts = {k: int(np.prod(v.shape))
            for k, v in ctr.flat_params(params).items()}
  logging.info("params: %d total; %s", sum(counts.values()), counts)

  coeffs = {k: v * config.optim.l2_scale
            for k, v in ctr.preset(config.optim.l2_preset).items()}
  logging.info("l2 on %s; patterns matching nothing: %s",
               ctr.l2_coefficients(params, coeffs),
               ctr.unmatched_patterns(params, coeffs))

  # --- compiled functions.
  bsh = sharding.batch_sharding(mesh, rules)
  state_sh = jax.tree.map(lambda x: x.sharding, state)
  chunk_fn = jax.jit(
      make_train_chunk(model, tx, coeffs, config.optim.loss_reduction, bsh),
      donate_argnums=(0,), out_shardings=(state_sh, repl))
  predict_fn = jax.jit(make_predict(model))
  perm_fn = jax.jit(lambda key, epoch: jax.random.permutation(
      jax.random.fold_in(key, epoch), n_train)[:steps_per_epoch * bsz]
                    .reshape(steps_per_epoch, bsz))
  train_ids = jax.device_put(train["ids"].astype(np.int32), repl)
  train_labels = jax.device_put(train["label"].astype(np.float32), repl)

  def evaluate(split, params, model_state):
    cols = prepared.splits[split]
    ids, n = pad_batches(cols["ids"].astype(np.int32),
                         min(config.train.eval_batch_size, len(cols["ids"])))
    probs = np.asarray(predict_fn(params, model_state,
                                  jax.device_put(ids, repl))).reshape(-1)[:n]
    return metrics.binary_metrics(cols["label"], probs, prefix=f"{split}/")

  # --- loop.
  total_steps = config.train.epochs * steps_per_epoch
  if config.train.max_steps > 0:
    total_steps = min(total_steps, config.train.max_steps)
  every = config.train.eval_every_steps or steps_per_epoch
  best = {"valid/auc": -1.0, "step": 0}
  best_vars, bad_evals, step = None, 0, 0
  # Chunk lengths compiled so far: a chunk of a new length includes its
  # compile time and is left out of the throughput.
  train_time, train_examples, compiled = 0.0, 0, set()
  log_file = open(os.path.join(workdir, "metrics.jsonl"), "a")
  tb = SummaryWriter(os.path.join(workdir, "tb"))
  logging.info("training: %d steps (%d per epoch), eval every %d", total_steps,
               steps_per_epoch, every)
  while step < total_steps:
    epoch, offset = divmod(step, steps_per_epoch)
    if offset == 0:  # a new epoch: its index batches [S, B]
      perm = (perm_fn(shuffle_key, epoch) if config.train.shuffle else
              jnp.arange(steps_per_epoch * bsz).reshape(steps_per_epoch, bsz))
    k = min(every - step % every, steps_per_epoch - offset, total_steps - step)
    t0 = time.perf_counter()
    state, sums = chunk_fn(state, train_ids, train_labels,
                           perm[offset:offset + k])
    sums = np.asarray(sums)  # blocks: timing below is of the chunk
    dt = time.perf_counter() - t0
    if k not in compiled:
      compiled.add(k)
    else:
      train_time += dt
      train_examples += k * bsz
    step += k
    if not np.all(np.isfinite(sums)):
      raise FloatingPointError(f"non-finite loss at step {step}: loss/bce/l2 "
                               f"sums over the last {k} steps = {sums}")
    if step % every and step < total_steps and step % steps_per_epoch:
      continue
    t1 = time.perf_counter()
    res = evaluate("valid", state["params"], state["model_state"])
    rec = {"step": step, "epoch": step / steps_per_epoch,
           "train/loss": float(sums[0] / k), "train/bce": float(sums[1] / k),
           "train/l2": float(sums[2] / k),
           "eval/time_s": time.perf_counter() - t1,
           "perf/examples_per_sec": k * bsz / dt, **res}
    log_file.write(json.dumps(rec) + "\n")
    log_file.flush()
    for key, value in rec.items():
      if key != "step":
        tb.add_scalar(key, value, step)
    tb.flush()
    logging.info("step %d (epoch %.2f): loss %.4f, valid auc %.4f logloss %.4f",
                 step, rec["epoch"], rec["train/loss"], res["valid/auc"],
                 res["valid/logloss"])
    if res["valid/auc"] > best["valid/auc"]:
      best = {**res, "step": step}
      best_vars = jax.device_get((state["params"], state["model_state"]))
      bad_evals = 0
    else:
      bad_evals += 1
      if bad_evals >= config.train.patience:
        logging.info("early stop at step %d (best step %d)", step, best["step"])
        break
  log_file.close()
  tb.close()

  # --- best params back, test once.
  params, model_state = jax.device_put(best_vars, (state_sh["params"],
                                                   state_sh["model_state"]))
  test = evaluate("test", params, model_state)
  dev = jax.devices()[0]
  results = {
      "valid/auc": best["valid/auc"], "valid/logloss": best["valid/logloss"],
      "test/auc": test["test/auc"], "test/logloss": test["test/logloss"],
      "best_step": best["step"], "steps": step,
      # Steady state: chunks of an already-compiled length only (None when
      # every chunk compiled, e.g. very short runs).
      "examples_per_sec": (train_examples / train_time if train_time else
                           None),
      "model": cfg.name, "recipe": config.recipe,
      "dataset": config.data.dataset,
      "protocol": config.data.protocol, "seed": config.seed,
      "device": f"{dev.platform}:{dev.device_kind} x{jax.device_count()}",
      "num_train": n_train, "num_valid": best["valid/num_examples"],
      "num_test": test["test/num_examples"],
  }
  with open(results_path, "w") as f:
    json.dump(results, f, indent=2)
  logging.info("results: %s", results)
  return results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
  if config is None or not workdir:
    raise app.UsageError("--config and --workdir are required")
  logging.info("process %d of %d; %d devices", jax.process_index(),
               jax.process_count(), jax.device_count())
  train_and_evaluate(config, workdir)


if __name__ == "__main__":
  app.run(main)
