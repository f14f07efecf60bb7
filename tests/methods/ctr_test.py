"""The ``ctr`` task (an ID backbone from scratch) on the shared loop.

The launcher ``experiments.train_ctr`` end to end on tiny synthetic data,
the split checks, and the shared train step of ``CtrTask`` on row-sharded
tables over 8 fake CPU devices == one device.
"""
import functools
import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl import flags
from flax import linen as nn

from experiments import launch
from experiments import train_ctr
from experiments.configs import ctr as ctr_configs
from flip_jax import sharding
from flip_jax import sharding_rules
from flip_jax.methods import ctr as ctr_task
from flip_jax.models import ctr
from flip_jax.train import ctr_task as ctr_family
from flip_jax.train import init as init_lib
from flip_jax.train import state as state_lib
from flip_jax.train import steps

CONFIG = os.path.join(os.path.dirname(ctr_configs.__file__), "ctr.py")
SMALL = ["--config.data.synthetic.num_users=60",
         "--config.data.synthetic.num_movies=50",
         "--config.data.synthetic.num_ratings=1500",
         "--config.train.batch_size=32", "--config.train.eval_batch_size=64",
         "--config.train.max_steps=5", "--config.train.eval_every_steps=2",
         "--config.model.ctr.dnn_hidden=(16,8)",
         "--config.model.ctr.embed_dim=8",
         "--config.model.ctr.low_rank=4",
         "--config.model.ctr.att_layers=1"]


def run_main(main, argv):
  """Runs an absl ``main`` on ``argv`` as the command line would."""
  mp = pytest.MonkeyPatch()
  # config_flags finds the --config.* overrides in sys.argv.
  mp.setattr("sys.argv", argv)
  # Other launchers imported by this worker's earlier tests share the flag
  # registry; their required flags (predict's --out ...) are not this
  # command's: their validators are set aside for this parse.
  given = {a.split("=", 1)[0].lstrip("-") for a in argv[1:]}
  for name in list(flags.FLAGS):
    holder = flags.FLAGS[name]
    if name not in given and holder.validators:
      mp.setattr(holder, "validators", [])
  flags.FLAGS.unparse_flags()
  flags.FLAGS(argv)
  try:
    main([argv[0]])
    return flags.FLAGS["config"].value
  finally:
    mp.undo()
    flags.FLAGS.unparse_flags()
    # Override flags are defined per parse; drop them for the next one.
    for name in [n for n in flags.FLAGS if n.startswith("config.")]:
      delattr(flags.FLAGS, name)


def ctr_argv(workdir, cache_dir, variant, *extra):
  return ["train_ctr", f"--config={CONFIG}:{variant}", f"--workdir={workdir}",
          f"--config.data.cache_dir={cache_dir}", *SMALL, *extra]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("ctr_cache")


@pytest.fixture(scope="module")
def dcnv2_run(cache_dir, tmp_path_factory):
  """(workdir, config, results.json) of one launcher run (dcnv2, flip_id)."""
  workdir = str(tmp_path_factory.mktemp("dcnv2") / "run")
  config = run_main(train_ctr.main, ctr_argv(
      workdir, cache_dir, "dataset=synthetic,model=dcnv2,recipe=flip_id"))
  with open(os.path.join(workdir, "results.json")) as f:
    return workdir, config, json.load(f)


def test_main_trains_evaluates_and_reports(dcnv2_run):
  workdir, _, res = dcnv2_run
  for key in ("valid/auc", "valid/logloss", "test/auc", "test/logloss"):
    assert np.isfinite(res[key]), key
  assert 0.0 <= res["test/auc"] <= 1.0
  assert res["best_step"] in (2, 4, 5) and res["steps"] == 5
  assert res["seed"] == 2012 and res["model"] == "dcnv2"
  assert res["task"] == "ctr" and res["recipe"] == "flip_id"
  assert res["examples_per_sec"] > 0 and "cpu" in res["device"]
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [l["step"] for l in lines] == [2, 4, 5]
  cfg = json.load(open(os.path.join(workdir, "config.json")))
  assert cfg["model"]["ctr"]["name"] == "dcnv2" and cfg["task"] == "ctr"
  fmap = json.load(open(os.path.join(workdir, "feature_map.json")))
  assert fmap


def test_rerun_on_the_finished_workdir_does_not_train(dcnv2_run):
  workdir, config, res = dcnv2_run
  metrics = open(os.path.join(workdir, "metrics.jsonl")).read()
  again = launch.run(config, workdir)
  assert open(os.path.join(workdir, "metrics.jsonl")).read() == metrics
  assert again["steps"] == res["steps"] == 5
  for key in ("best_step", "valid/auc", "valid/logloss", "test/auc",
              "test/logloss", "model", "recipe", "seed"):
    assert again[key] == res[key], key


def test_rerun_on_the_finished_workdir_reports_the_stored_results(dcnv2_run):
  workdir, config, res = dcnv2_run
  again = launch.run(config, workdir)
  assert again == res
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f) == res


def test_main_other_backbone_and_recipe(cache_dir, tmp_path):
  workdir = str(tmp_path / "run")
  run_main(train_ctr.main, ctr_argv(
      workdir, cache_dir, "dataset=synthetic,model=afn,recipe=ctr_base",
      "--config.model.ctr.afn_ltl_hidden=4"))
  res = json.load(open(os.path.join(workdir, "results.json")))
  assert res["recipe"] == "ctr_base" and np.isfinite(res["test/logloss"])


def test_bad_split_is_reported():
  cols = {"ids": np.array([[0, 5]], np.int32), "label": np.array([1.0])}
  with pytest.raises(ValueError, match="row 0 field 1 has id 5"):
    ctr_task.check_split("valid", cols, num_features=5, num_fields=2)
  with pytest.raises(ValueError, match="0/1"):
    ctr_task.check_split("valid", {"ids": cols["ids"] % 5,
                                   "label": np.array([0.5])}, 5, 2)


def test_unknown_recipe():
  with pytest.raises(ValueError, match="recipe"):
    ctr_configs.get_config("recipe=nope")


# ----------------------------------------------------------------- sharding
N, F = 64, 4
CFG = ctr.CTRConfig(name="dcnv2", num_features=N, num_fields=F, embed_dim=8,
                    dnn_hidden=(16, 8), low_rank=4, num_experts=2)


def _mesh(axes):
  size = int(np.prod([s for _, s in axes]))
  devices = jax.devices()[:size]
  assert len(devices) == size, "conftest must provide 8 fake CPU devices"
  return sharding.make_mesh(axes, devices)


@pytest.mark.multidevice
def test_row_sharded_lookup_equals_unsharded():
  mesh = _mesh([("data", 1), ("fsdp", 8), ("tensor", 1)])
  emb = ctr.build(CFG)
  ids = jnp.asarray(np.random.RandomState(0).randint(0, N, (16, F)), jnp.int32)
  boxed = emb.init(jax.random.key(0), ids, method=emb.encode)
  sh = sharding.logical_to_sharding(boxed, mesh, sharding_rules.DEFAULT_RULES)
  table_sh = sh["params"]["embedding"]["table"]
  assert table_sh.spec[0] == "fsdp"  # feature_vocab -> rows over 8 devices
  params = nn.meta.unbox(boxed)
  sharded = jax.device_put(params, sh)
  table = sharded["params"]["embedding"]["table"]
  assert {s.data.shape for s in table.addressable_shards} == {(N // 8, 8)}
  lookup = jax.jit(lambda p, i: emb.apply(p, i, method=emb.embed))
  np.testing.assert_array_equal(lookup(sharded, ids), lookup(params, ids))
  np.testing.assert_allclose(
      jax.jit(lambda p, i: emb.apply(p, i, method=emb.encode))(sharded, ids),
      emb.apply(params, ids, method=emb.encode), rtol=1e-5, atol=1e-7)


def _task():
  """The ctr task (recipe ctr_base: summed BCE + L2) on CFG's sizes."""
  config = ctr_configs.get_config("dataset=synthetic,model=dcnv2,"
                                  "recipe=ctr_base")
  config.model.ctr.update(embed_dim=CFG.embed_dim, dnn_hidden=CFG.dnn_hidden,
                          low_rank=CFG.low_rank, num_experts=CFG.num_experts)
  task = ctr_task.CtrTask(config)
  data = types.SimpleNamespace(feature_map=types.SimpleNamespace(
      num_features=N, num_fields=F))
  task.build_model(data)
  return task


def _run(mesh, num_steps=2, batch_size=16):
  """``num_steps`` of the loop's jitted ``steps.train_step`` on ``mesh``."""
  task = _task()
  rules = sharding_rules.DEFAULT_RULES
  tx = optax.adam(1e-2)
  rng = np.random.RandomState(0)
  ids = rng.randint(0, N, (64, F)).astype(np.int32)
  labels = (rng.rand(64) < 0.4).astype(np.float32)
  example = {"ids": ids[:8]}
  init = init_lib.sharded_state_init(
      lambda r: task.init_variables(r, example, {}),
      lambda p, ms, r: state_lib.create_train_state(p, tx, r, ms),
      tx, mesh, rules)
  keys = task.model_keys() + ctr_family.LABEL_KEYS
  batch_sh = {k: sharding.batch_sharding(mesh, rules, 2 if k == "ids" else 1)
              for k in keys}
  idx = rng.permutation(64)[:num_steps * batch_size].reshape(num_steps, -1)
  losses = []
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state = init.init(state_lib.new_key(0))
    first = jax.device_get(state.params)
    step_fn = jax.jit(functools.partial(steps.train_step, task=task),
                      in_shardings=(init.shardings, batch_sh, {}),
                      out_shardings=(init.shardings,
                                     sharding.replicated(mesh)),
                      donate_argnums=0)
    for rows in idx:
      batch = sharding.global_batch(
          {"ids": ids[rows], "label": labels[rows],
           "weight": np.ones(len(rows), np.float32)}, mesh, rules, batch_sh)
      state, metrics = step_fn(state, batch, {})
      losses.append(float(metrics["train/loss"]))
  return state, np.asarray(losses), first


@pytest.mark.parametrize("axes,table_axis", [
    ([("data", 1), ("fsdp", 8), ("tensor", 1)], "fsdp"),
    ([("data", 2), ("fsdp", 1), ("tensor", 4)], "tensor")])
@pytest.mark.multidevice
def test_sharded_train_step_equals_single_device(axes, table_axis):
  s8, l8, _ = _run(_mesh(axes))
  s1, l1, init1 = _run(_mesh([("data", 1), ("fsdp", 1), ("tensor", 1)]))
  table = s8.params["ctr"]["embedding"]["table"]
  assert table.sharding.spec[0] == table_axis  # feature_vocab rows
  rows = N // dict(axes)[table_axis]
  assert {s.data.shape[0] for s in table.addressable_shards} == {rows}
  assert int(s8.step) == int(s1.step) == 2
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  flat8 = ctr.flat_params(jax.device_get(s8.params))
  flat1 = ctr.flat_params(jax.device_get(s1.params))
  assert flat8.keys() == flat1.keys()
  for k in flat1:
    np.testing.assert_allclose(flat8[k], flat1[k], rtol=1e-4, atol=1e-6,
                               err_msg=k)
  # Training moved the params at all.
  init = ctr.flat_params(init1)
  assert not np.allclose(init["ctr/head/kernel"], flat1["ctr/head/kernel"])
