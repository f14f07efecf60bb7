r"""Where FLIP's ICL starts, and whether it can leave: one real batch.

  python -m experiments.sweeps.icl_probe --dataset=ml-100k \
    --data_dir=../shared/data/ml-100k --preset=cpu-full [--normalize \
    --temperature=0.1]

Builds the pretraining task of the preset (public PLM weights, the ID model
from its official init), takes one example batch and prints the spread of
the views across its rows (mean per-feature std of the ID tower's output,
z_r and z_t), then overfits that batch on ICL alone (weight 1; by default
the official optimiser, AdamW at 1e-4 with weight decay 1e-3; no dropout
unless ``--dropout``, then a new mask every step as in training;
``--fresh``: a new batch every step instead) and prints the training
batch's loss / accuracy and, in eval mode (no dropout), a fixed held-out
batch's (test rows, as the loop's monitor) along the way. ``--num_layers=0``
keeps every layer of the PLM (MiniLM-L6: 6). RESULTS.md, "ICL stays at
chance", quotes its output.
"""
from absl import flags

from experiments import launch

_DATASET = flags.DEFINE_string("dataset", "synthetic", "Dataset name.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "Raw data folder.")
_PRESET = flags.DEFINE_string("preset", "cpu-full", "Preset of the config.")
_NORMALIZE = flags.DEFINE_bool("normalize", False, "pretrain.icl.normalize.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.7,
                                  "pretrain.icl.temperature.")
_BATCH = flags.DEFINE_integer("batch", 32, "Rows of the batch.")
_STEPS = flags.DEFINE_integer("steps", 300, "Optimizer steps.")
_OPTIMIZER = flags.DEFINE_enum("optimizer", "adamw", ["adam", "adamw"],
                               "adamw (official, weight decay 1e-3) or adam.")
_LR = flags.DEFINE_float("lr", 1e-4, "Learning rate (official: 1e-4).")
_LAYERS = flags.DEFINE_integer("num_layers", 0, "PLM layers kept (0 = all; "
                               "the preset's otherwise cut).")
_FRESH = flags.DEFINE_bool("fresh", False, "A new batch every step (the "
                           "training regime) instead of overfitting one.")
_DROPOUT = flags.DEFINE_bool("dropout", False, "Train with the model's "
                             "dropout on (a new mask every step).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/icl_probe",
                               "Folder beside which the data cache lives.")


def main(argv):
  del argv
  launch.init_runtime()
  # pylint: disable=g-import-not-at-top
  import functools
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import optax
  from experiments.configs import flip_pretrain
  from flip_jax import methods
  from flip_jax.data import pipeline
  from flip_jax.train import init as init_lib
  # pylint: enable=g-import-not-at-top
  cfg = flip_pretrain.get_config(f"dataset={_DATASET.value},"
                                 f"preset={_PRESET.value}")
  cfg.data.data_dir = _DATA_DIR.value
  p = cfg.pretrain
  p.mlm.enabled = p.mtm.enabled = False
  p.icl.weight, p.icl.normalize = 1.0, _NORMALIZE.value
  p.icl.temperature = _TEMPERATURE.value
  p.heldout_rows = _BATCH.value
  cfg.model.plm.num_layers = _LAYERS.value or None
  task = methods.make_task(cfg)
  data = task.load_data(_WORKDIR.value)
  model = task.build_model(data)
  batch = task.example_batch(data, _BATCH.value)
  consts = data.consts
  params = nn.meta.unbox(task.init_variables(jax.random.PRNGKey(cfg.seed),
                                             batch, consts)["params"])
  # The loop's placer (one device here), as a fresh run's post_init gets it.
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  put = functools.partial(init_lib.put_subtree,
                          shardings=jax.tree.map(lambda _: one, params))
  params = task.post_init(jax.device_put(params, one), {}, put, data)[0]

  def spread(prm):
    z_r, z_t = model.apply({"params": prm}, batch, method=model.icl_views)
    r = model.apply({"params": prm}, batch["ids"], method=lambda m, x: (
        m.ctr.encode(x, deterministic=True)))
    return tuple(float(jnp.std(x, axis=0).mean()) for x in (r, z_r, z_t))

  print("spread across rows at init (ID tower, z_r, z_t): "
        "%.2e %.2e %.2e" % spread(params))
  tx = (optax.adamw(_LR.value, weight_decay=1e-3)
        if _OPTIMIZER.value == "adamw" else optax.adam(_LR.value))
  heldout = data.monitor_batch
  held_fn = jax.jit(lambda prm: task.monitor({"params": prm}, heldout, consts))

  @jax.jit
  def step(prm, state, batch, rng):
    def loss_fn(q):
      out = model.apply({"params": q}, batch, consts,
                        deterministic=not _DROPOUT.value,
                        rngs={"dropout": rng, "noise": rng})
      return out["loss"], out
    (_, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(prm)
    updates, state = tx.update(grads, state, prm)
    return optax.apply_updates(prm, updates), state, out

  state = tx.init(params)
  batches = pipeline.train_iterator(
      data.train, global_batch_size=_BATCH.value, seed=cfg.seed,
      process_index=0, process_count=1, prefetch_buffer_size=0,
      transform=data.batch_transform) if _FRESH.value else None
  for i in range(1, _STEPS.value + 1):
    if batches is not None:
      batch = {k: v for k, v in next(batches).items()
               if k in data.train_keys}
    params, state, out = step(params, state, batch,
                              jax.random.PRNGKey(cfg.seed + i))
    if i in (1, 10, 30, 100, 200) or i == _STEPS.value:
      held = held_fn(params)
      print(f"step {i}: ICL loss {float(out['icl_loss']):.3f} "
            f"accuracy {float(out['icl_acc']):.3f} (chance "
            f"{1 / _BATCH.value:.3f}, ln batch {jnp.log(_BATCH.value):.3f}); "
            f"held-out, eval mode: loss {float(held['icl_loss']):.3f} "
            f"accuracy {float(held['icl_acc']):.3f}")
  print("spread after (ID tower, z_r, z_t): %.2e %.2e %.2e" % spread(params))


if __name__ == "__main__":
  launch.run_main(main)
