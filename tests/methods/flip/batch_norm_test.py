"""BatchNorm backbones through FLIP pretraining, finetuning and export.

The running statistics live in ``TrainState.model_state``: the train steps
update them (whole batch and micro-batched), checkpoints keep them,
``init_from`` carries the backbone's statistics into finetuning with its
weights, evaluation and the export use them.
"""
import dataclasses
import functools
import types

import jax
import ml_collections as mlc
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from experiments.configs import flip_pretrain
from flip_jax import checkpoint
from flip_jax.methods import run_export
from flip_jax.methods.flip import finetune_model as ft_lib
from flip_jax.methods.flip import pretrain
from flip_jax.methods.flip import pretrain_model as flip_lib
from flip_jax.train import loop
from flip_jax.train import reload
from flip_jax.train import state as state_lib
from flip_jax.train import steps

from tests.methods.flip import finetune_loop_test as ftest  # pylint: disable=g-bad-import-order
from tests.methods.flip import flip_testlib as fst  # pylint: disable=g-bad-import-order
from tests.methods.flip import pretrain_loop_test as ptest  # pylint: disable=g-bad-import-order


def _bn_model(**ctr_kw):
  base = fst.tiny_config()
  ctr_cfg = dataclasses.replace(base.ctr, **ctr_kw)
  assert ctr_cfg.uses_batch_norm
  return flip_lib.FlipPretrainModel(fst.tiny_config(ctr=ctr_cfg))


def _state(model, batch, tx):
  variables = jax.jit(model.init)({"params": jax.random.PRNGKey(0),
                                   "dropout": jax.random.PRNGKey(1),
                                   "noise": jax.random.PRNGKey(2)}, batch,
                                  fst.consts())
  params, rest = state_lib.split_variables(
      jax.tree.map(lambda x: getattr(x, "value", x), variables,
                   is_leaf=lambda x: hasattr(x, "value")))
  assert set(rest) == {"batch_stats"}
  return state_lib.create_train_state(params, tx, jax.random.PRNGKey(3), rest)


@pytest.mark.long
def test_micro_batched_pretrain_step_updates_running_statistics():
  # The whole-batch step runs in the AFN end-to-end test below.
  micro_batches = 2
  model = _bn_model(name="afn", afn_ltl_hidden=6)
  batch = fst.random_batch()
  tx = optax.adamw(1e-2)
  state = _state(model, batch, tx)
  before = jax.tree.map(np.asarray, state.model_state)
  step = jax.jit(functools.partial(steps.train_step, task=fst.task_for(model),
                                   micro_batches=micro_batches))
  first = None
  for _ in range(8):
    state, m = step(state, batch, fst.consts())
    first = first if first is not None else float(m["train/loss"])
  assert np.isfinite(float(m["train/loss"])) and float(m["train/loss"]) < first
  after = jax.tree.map(np.asarray, state.model_state)
  assert jax.tree.structure(after) == jax.tree.structure(before)
  for path, a in jax.tree_util.tree_flatten_with_path(after)[0]:
    b = before
    for k in path:
      b = b[k.key]
    assert np.isfinite(a).all() and not np.allclose(a, b), path
  # Evaluation-mode passes use the running statistics and change nothing.
  out = jax.jit(functools.partial(model.apply, deterministic=True))(
      state.variables, batch, fst.consts(),
      rngs={"noise": jax.random.PRNGKey(0)})
  assert np.isfinite(float(out["loss"]))


def test_one_micro_batch_equals_the_whole_batch_statistics():
  model = _bn_model(dnn_use_bn=True)
  batch = fst.random_batch()
  tx = optax.sgd(0.0)
  state = _state(model, batch, tx)
  rngs = steps.step_rngs(state.rng, state.step)
  folded = {k: jax.random.fold_in(v, 0) for k, v in rngs.items()}
  # cached_icl_grads folds the micro-batch index into the keys.
  want = jax.jit(functools.partial(state_lib.apply_train, model,
                                   deterministic=False))(
      state.params, state.model_state, batch, fst.consts(), rngs=folded)[1]
  _, _, got = jax.jit(functools.partial(pretrain.cached_icl_grads, model,
                                        num=1))(
      state.params, batch, fst.consts(), rngs,
      model_state=state.model_state)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-6), got, want)


def test_init_from_carries_the_backbone_statistics(tmp_path):
  model = _bn_model(dnn_use_bn=True)
  batch = fst.random_batch()
  tx = optax.adamw(1e-2)
  state = _state(model, batch, tx)
  stats = jax.tree.map(lambda x: x + 0.5, state.model_state)
  state = state.replace(model_state=stats)
  with checkpoint.Checkpointer(tmp_path / "pre", max_to_keep=1,
                               save_interval_steps=1, async_save=False) as c:
    c.save(3, state, force=True)
  assert jax.tree.structure(checkpoint.restore_model_state(tmp_path / "pre")) \
      == jax.tree.structure(stats)
  # A finetuning ID model: same backbone, fresh statistics.
  ft = ft_lib.FlipCtrModel(ft_lib.FinetuneConfig(mode="id",
                                                 ctr=model.config.ctr))
  params, fresh = state_lib.split_variables(jax.tree.map(
      lambda x: getattr(x, "value", x),
      ft.init(jax.random.PRNGKey(0), {"ids": batch["ids"]}),
      is_leaf=lambda x: hasattr(x, "value")))
  repl = NamedSharding(jax.sharding.Mesh(jax.devices()[:1], ("d",)), P())
  shardings = types.SimpleNamespace(
      params=jax.tree.map(lambda _: repl, params),
      model_state=jax.tree.map(lambda _: repl, fresh))
  ckpt_cfg = mlc.ConfigDict({
      "init_from": str(tmp_path / "pre"), "init_step": -1,
      "keep_regex": [r"^ctr/"], "allow_missing_regex": [r"^ctr/(linear|head)/"],
      "drop_regex": [r"^(mlm_head|mtm_head|ctr_proj|txt_proj|nce)/",
                     r"^plm/"]})
  _, got = loop._init_from(ckpt_cfg, params, fresh,  # pylint: disable=protected-access
                           shardings)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a),
                                                          np.asarray(b)),
               got["batch_stats"]["ctr"], stats["batch_stats"]["ctr"])


@pytest.mark.long
def test_afn_pretrain_finetune_export_end_to_end(tiny_bert_dir, tmp_path):
  cache = tmp_path / "cache"
  cfg = flip_pretrain.get_config("dataset=synthetic,preset=tiny,ctr=afn")
  over = {k: v for k, v in ptest.tiny_overrides(tiny_bert_dir, cache).items()
          if k not in ("model.ctr.low_rank", "model.ctr.num_experts")}
  ftest.set_fields(cfg, {**over, "model.ctr.afn_ltl_hidden": 8,
                         "train.max_steps": 2, "ckpt.every_steps": 2})
  pre = tmp_path / "pre"
  ptest.train(cfg, pre)
  pre_stats = checkpoint.restore_model_state(str(pre))
  assert "ctr" in pre_stats["batch_stats"]
  ft_cfg = ftest.ft_config(tiny_bert_dir, cache, "id", str(pre),
                           **{"train.max_steps": 4,
                              "train.eval_every_steps": 2})
  res = ptest.train(ft_cfg, tmp_path / "ft")
  assert np.isfinite(res["test/auc"]) and res["best_step"] > 0
  variables = reload.load_run(str(tmp_path / "ft")).variables
  assert set(variables) == {"params", "batch_stats"}
  diff = run_export.export_run(tmp_path / "ft", tmp_path / "torch",
                               check=True, num_rows=32)
  assert diff <= run_export.CHECK_ATOL
