"""Tests for flip_jax.checkpoint: save/restore, meshes, SIGKILL, init-from."""
import importlib.util
import os
import pathlib
import signal
import subprocess
import sys

import grain
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from flip_jax import checkpoint
from flip_jax import checkpoint_arrays
from flip_jax import init_merge
from flip_jax import optim
from flip_jax import sharding
from flip_jax.train import state as state_lib
from tests.helpers import env as env_lib  # pylint: disable=g-bad-import-order

REPO = pathlib.Path(__file__).resolve().parents[1]


def _optim_cfg():
  return mlc.ConfigDict(dict(
      name="adamw", lr=1e-2, weight_decay=1e-3, b1=0.9, b2=0.999, eps=1e-8,
      decay_mask="all", grad_clip=1.0, param_groups=[("^plm/", 1e-3)],
      freeze=[], schedule=dict(name="constant")))


def _params():
  k = jax.random.split(jax.random.key(0), 3)
  return {"ctr": {"emb": jax.random.normal(k[0], (16, 8)),
                  "dense": {"kernel": jax.random.normal(k[1], (8, 4)),
                            "bias": jnp.zeros((4,))}},
          "plm": {"w": jax.random.normal(k[2], (8,))}}


def _trained_state(steps=2):
  tx = optim.build_optimizer(_optim_cfg(), steps_per_epoch=10,
                             total_steps=100)
  st = state_lib.create_train_state(_params(), tx, jax.random.key(7))
  step_fn = jax.jit(lambda st, i: state_lib.apply_gradients(
      st, jax.tree.map(lambda p: jnp.sin(p + i), st.params)))
  for i in range(steps):
    st = step_fn(st, i)
  return st


def _iter():
  return iter(grain.MapDataset.range(100).shuffle(seed=0).batch(4)
              .to_iter_dataset())


def _assert_tree_equal(a, b):
  """Same leaf paths and values (static fields such as tx are ignored)."""
  la = jax.tree_util.tree_flatten_with_path(a)[0]
  lb = jax.tree_util.tree_flatten_with_path(b)[0]
  assert [optim.path_str(p) for p, _ in la] == [optim.path_str(p)
                                                for p, _ in lb]
  for (path, x), (_, y) in zip(la, lb):
    assert np.asarray(x).dtype == np.asarray(y).dtype, optim.path_str(path)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y),
                                  err_msg=optim.path_str(path))


def test_save_restore_identical_state_rng_and_iterator(tmp_path):
  st = _trained_state()
  it = _iter()
  for _ in range(3):
    next(it)
  ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=3,
                                 save_interval_steps=1)
  assert ckpt.latest_step() is None
  assert ckpt.save(int(st.step), st, it)
  ckpt.close()
  expected_next = [next(it).tolist() for _ in range(3)]
  assert os.path.isdir(tmp_path / "checkpoints" / "2" / "state")
  assert os.path.isdir(tmp_path / "checkpoints" / "2" / "data_iter")

  # A fresh process-like start: new manager, fresh state and iterator.
  ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=3,
                                 save_interval_steps=1)
  assert ckpt.latest_step() == 2
  fresh = _trained_state(steps=0)
  it2 = _iter()
  restored = ckpt.restore(2, checkpoint.abstract_like(fresh), it2)
  ckpt.close()
  assert isinstance(restored, state_lib.TrainState)
  assert int(restored.step) == 2
  _assert_tree_equal(restored, st)
  assert restored.rng.dtype == jnp.uint32
  np.testing.assert_array_equal(
      jax.random.key_data(state_lib.step_key(restored)),
      jax.random.key_data(state_lib.step_key(st)))
  assert [next(it2).tolist() for _ in range(3)] == expected_next
  # The next step from the restored state equals the uninterrupted one.
  step_fn = jax.jit(lambda s: state_lib.apply_gradients(
      s, jax.tree.map(jnp.cos, s.params)))
  _assert_tree_equal(step_fn(restored).params, step_fn(st).params)


def test_max_to_keep_interval_and_force(tmp_path):
  st = {"x": jnp.arange(4.0)}
  ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=2,
                                 save_interval_steps=2, async_save=False)
  saved = [ckpt.save(s, st) for s in range(1, 7)]
  assert saved == [False, True, False, True, False, True]
  assert ckpt.save(7, st, force=True)
  assert not ckpt.save(7, st, force=True)  # already saved: no-op
  ckpt.wait_until_finished()
  assert ckpt.all_steps() == [6, 7]
  assert ckpt.latest_step() == 7
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["6", "7"]
  with pytest.raises(FileNotFoundError, match=r"step 2 not in .*\[6, 7\]"):
    ckpt.restore(2, checkpoint.abstract_like(st))
  with pytest.raises(FileNotFoundError, match="no data_iter"):
    ckpt.restore(7, checkpoint.abstract_like(st), _iter())
  ckpt.close()


def test_restore_requires_shardings(tmp_path):
  st = {"x": jnp.arange(4.0)}
  ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=None,
                                 save_interval_steps=1, async_save=False)
  ckpt.save(1, st)
  with pytest.raises(ValueError, match="'x' has no sharding"):
    ckpt.restore(1, {"x": jax.ShapeDtypeStruct((4,), jnp.float32)})
  ckpt.close()


def test_restore_names_a_leaf_saved_with_another_shape(tmp_path):
  st = _trained_state(steps=1)
  with checkpoint.Checkpointer(tmp_path, max_to_keep=None,
                               save_interval_steps=1, async_save=False) as c:
    c.save(1, st)
    # Another PRNG implementation: its key data has another shape.
    other = st.replace(rng=state_lib.raw_key(jax.random.key(7, impl="rbg")))
    with pytest.raises(ValueError, match=r"'rng' was saved with shape \(2,\)"
                       r", this run expects \(4,\).*prng_impl"):
      c.restore(1, checkpoint.abstract_like(other))
    wider = st.replace(params=dict(st.params, plm={"w": jnp.zeros(9)}))
    with pytest.raises(ValueError, match=r"'params/plm/w' .* \(8,\), this "
                       r"run expects \(9,\)"):
      c.restore(1, checkpoint.abstract_like(wider))
    _assert_tree_equal(c.restore(1, checkpoint.abstract_like(st)), st)


def _sharded_tree(mesh, spec):
  sh = NamedSharding(mesh, spec)
  rep = NamedSharding(mesh, P())
  x = jnp.arange(64 * 6, dtype=jnp.float32).reshape(64, 6)
  return {"table": jax.device_put(x, sh),
          "step": jax.device_put(jnp.int32(5), rep)}


@pytest.mark.multidevice
@pytest.mark.parametrize("save_devices,restore_devices", [(8, 1), (1, 8)])
def test_restore_onto_other_mesh(tmp_path, save_devices, restore_devices):
  assert jax.device_count() >= 8, "conftest should provide 8 fake devices"
  mesh_save = sharding.make_mesh([("data", -1)],
                                 jax.devices()[:save_devices])
  mesh_restore = sharding.make_mesh([("data", -1)],
                                    jax.devices()[:restore_devices])
  st = _sharded_tree(mesh_save, P("data", None))
  ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=1,
                                 save_interval_steps=1)
  ckpt.save(5, st)
  ckpt.wait_until_finished()
  target = {
      "table": jax.ShapeDtypeStruct(
          (64, 6), jnp.float32,
          sharding=NamedSharding(mesh_restore, P("data", None))),
      "step": jax.ShapeDtypeStruct(
          (), jnp.int32, sharding=NamedSharding(mesh_restore, P()))}
  out = ckpt.restore(5, target)
  ckpt.close()
  assert out["table"].sharding == target["table"].sharding
  assert len(out["table"].sharding.device_set) == restore_devices
  np.testing.assert_array_equal(np.asarray(out["table"]),
                                np.asarray(st["table"]))
  assert int(out["step"]) == 5


@pytest.mark.multidevice
def test_replicated_arrays_on_cpu_are_saved_without_compiling(tmp_path):
  """orbax's replica-parallel writing (one slice per replica, each an eager
  XLA program compiled per device and shape) is off on CPU: saving arrays
  replicated over 8 devices compiles nothing, and they read back whole."""
  mesh = sharding.make_mesh([("data", -1)], jax.devices()[:8])
  rep = NamedSharding(mesh, P())
  tree = {f"w{i}": jax.device_put(
      jnp.arange(8 * (i + 3), dtype=jnp.float32).reshape(8, i + 3), rep)
          for i in range(4)}
  compiles = []
  def count(event, duration, **kw):
    del duration, kw
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(event)
  ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=1,
                                 save_interval_steps=1, async_save=False)
  jax.monitoring.register_event_duration_secs_listener(count)
  try:
    ckpt.save(1, tree)
    ckpt.wait_until_finished()
  finally:
    jax.monitoring.unregister_event_duration_listener(count)
  assert not compiles, f"{len(compiles)} programs compiled while saving"
  assert not checkpoint_arrays.write_replicas_whole_on_cpu()  # done once
  target = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), tree)
  out = ckpt.restore(1, target)
  ckpt.close()
  jax.tree.map(np.testing.assert_array_equal, out, tree)


def test_sigkill_during_save_keeps_previous_checkpoint(tmp_path):
  env = env_lib.child_env(devices=1)  # the child runs on one CPU device
  env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
  child = subprocess.Popen(
      [sys.executable, str(REPO / "tests" / "helpers" / "ckpt_kill_child.py"),
       str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True, env=env, cwd=str(REPO))
  try:
    lines = []
    for line in child.stdout:
      lines.append(line.strip())
      if line.startswith("SAVING 2"):
        break
    ckdir = tmp_path / "checkpoints"
    listing = sorted(os.listdir(ckdir)) if ckdir.is_dir() else []
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
  finally:
    if child.poll() is None:
      child.kill()
  assert lines[-1:] == ["SAVING 2"], (lines, child.stderr.read()[-3000:])
  assert child.returncode == -signal.SIGKILL
  # Killed mid-save: step 2 exists only as an uncommitted temporary dir.
  assert "1" in listing and "2" not in listing, listing
  leftovers = [d for d in os.listdir(ckdir) if d.startswith("2.")]
  assert leftovers, os.listdir(ckdir)

  spec = importlib.util.spec_from_file_location(
      "ckpt_kill_child", REPO / "tests" / "helpers" / "ckpt_kill_child.py")
  ckpt_kill_child = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(ckpt_kill_child)
  ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=3,
                                 save_interval_steps=1)
  assert ckpt.latest_step() == 1
  assert ckpt.all_steps() == [1]
  expected = ckpt_kill_child.make_state(1)
  it = ckpt_kill_child.make_iter()
  restored = ckpt.restore(1, checkpoint.abstract_like(expected), it)
  _assert_tree_equal(restored, expected)
  ref = ckpt_kill_child.make_iter()
  next(ref)
  assert next(it).tolist() == next(ref).tolist()
  # The leftover temporary dir does not block saving step 2 again.
  small = {"step": jnp.int32(2), "params": {"w0": jnp.ones((3,))}}
  assert ckpt.save(2, small, force=True)
  ckpt.close()
  assert ckpt.all_steps() == [1, 2]
  assert not [d for d in os.listdir(ckdir) if "tmp" in d], os.listdir(ckdir)
  ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=3,
                                 save_interval_steps=1)
  _assert_tree_equal(ckpt.restore(2, checkpoint.abstract_like(small)), small)
  ckpt.close()


# ---------------------------------------------------------------- init-from

def _pre_params():
  return {"ctr": {"emb": np.full((10, 4), 1.0, np.float32),
                  "dnn": {"kernel": np.full((4, 3), 2.0, np.float32)}},
          "plm": {"layer_0": {"kernel": np.full((4, 4), 3.0, np.float32)}},
          "ctr_proj": {"kernel": np.full((3, 2), 4.0, np.float32)},
          "mlm_head": {"bias": np.full((5,), 5.0, np.float32)}}


def _ft_params():
  return {"ctr": {"emb": jnp.zeros((10, 4)),
                  "dnn": {"kernel": jnp.zeros((4, 3))},
                  "linear": {"kernel": jnp.zeros((10, 1))}},
          "plm": {"layer_0": {"kernel": jnp.zeros((4, 4))}},
          "ctr_head": {"kernel": jnp.zeros((3, 1))}}


KEEP = [r"^ctr/", r"^plm/"]
DROP = [r"^(mlm_head|mtm_head|ctr_proj|txt_proj|nce)/"]


def test_merge_init_keep_drop_allow_missing():
  params, report = init_merge.merge_init(
      _ft_params(), _pre_params(), keep=KEEP, drop=DROP,
      allow_missing=[r"^ctr/linear/"], return_report=True)
  np.testing.assert_array_equal(params["ctr"]["emb"], 1.0)
  np.testing.assert_array_equal(params["ctr"]["dnn"]["kernel"], 2.0)
  np.testing.assert_array_equal(params["plm"]["layer_0"]["kernel"], 3.0)
  np.testing.assert_array_equal(params["ctr"]["linear"]["kernel"], 0.0)
  np.testing.assert_array_equal(params["ctr_head"]["kernel"], 0.0)
  assert sorted(report.taken) == ["ctr/dnn/kernel", "ctr/emb",
                                  "plm/layer_0/kernel"]
  assert report.missing_allowed == ["ctr/linear/kernel"]
  assert report.reinitialised == ["ctr_head/kernel"]
  assert sorted(report.dropped) == ["ctr_proj/kernel", "mlm_head/bias"]
  assert "taken 3" in report.summary()
  assert (jax.tree.structure(params)
          == jax.tree.structure(_ft_params()))


def test_merge_init_drop_overrides_keep():
  params = init_merge.merge_init(
      _ft_params(), _pre_params(), keep=KEEP,
      drop=DROP + [r"^plm/"], allow_missing=[r"^ctr/linear/"])
  np.testing.assert_array_equal(params["plm"]["layer_0"]["kernel"], 0.0)
  np.testing.assert_array_equal(params["ctr"]["emb"], 1.0)


def test_merge_init_missing_kept_param_fails():
  with pytest.raises(ValueError, match=r"kept param 'ctr/linear/kernel' is "
                     "not in the checkpoint"):
    init_merge.merge_init(_ft_params(), _pre_params(), keep=KEEP, drop=DROP)


def test_merge_init_wrong_shape_fails():
  pre = _pre_params()
  pre["ctr"]["emb"] = np.zeros((11, 4), np.float32)
  with pytest.raises(ValueError, match=r"'ctr/emb' has shape \(11, 4\) in "
                     r"the checkpoint but \(10, 4\) here"):
    init_merge.merge_init(_ft_params(), pre, keep=KEEP, drop=DROP,
                          allow_missing=[r"^ctr/linear/"])


def test_merge_init_unused_checkpoint_params_fail():
  pre = _pre_params()
  for i in range(7):
    pre[f"extra_{i}"] = {"w": np.zeros((1,), np.float32)}
  with pytest.raises(ValueError) as e:
    init_merge.merge_init(_ft_params(), pre, keep=KEEP, drop=DROP,
                          allow_missing=[r"^ctr/linear/"])
  msg = str(e.value)
  assert "7 checkpoint params are neither used nor dropped" in msg
  assert "extra_0/w" in msg and "extra_4/w" in msg and "extra_5/w" not in msg
  # Not kept (only ctr) and not dropped: the unused plm params are an error.
  with pytest.raises(ValueError, match="plm/layer_0/kernel"):
    init_merge.merge_init(_ft_params(), _pre_params(), keep=[r"^ctr/"],
                          drop=DROP, allow_missing=[r"^ctr/linear/"])


def test_merge_init_bad_regex_and_string():
  with pytest.raises(ValueError, match="bad drop regex"):
    init_merge.merge_init(_ft_params(), _pre_params(), keep=KEEP,
                          drop=["(unclosed"])
  with pytest.raises(TypeError, match="list of regexes"):
    init_merge.merge_init(_ft_params(), _pre_params(), keep="^ctr/",
                          drop=DROP)


def test_restore_params_from_workdir(tmp_path):
  st = _trained_state(steps=1)
  ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=None,
                                 save_interval_steps=1)
  ckpt.save(1, st)
  st2 = jax.jit(state_lib.apply_gradients)(
      st, jax.tree.map(jnp.ones_like, st.params))
  ckpt.save(2, st2)
  ckpt.close()
  latest = checkpoint.restore_params(tmp_path)
  first = checkpoint.restore_params(tmp_path, step=1)
  for got, want in ((latest, st2.params), (first, st.params)):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      assert isinstance(g, np.ndarray)
      np.testing.assert_array_equal(g, np.asarray(w))
  with pytest.raises(FileNotFoundError, match=r"step 3 not in .*\[1, 2\]"):
    checkpoint.restore_params(tmp_path, step=3)
  with pytest.raises(FileNotFoundError, match="no checkpoint directory"):
    checkpoint.restore_params(tmp_path / "nope")
  # End to end: finetune params from the pretraining workdir.
  fresh = jax.tree.map(jnp.zeros_like, st.params)
  fresh["ctr"]["head"] = {"kernel": jnp.zeros((4, 1))}
  merged = init_merge.merge_init(fresh, latest, keep=[".*"], drop=[],
                                 allow_missing=[r"^ctr/head/"])
  np.testing.assert_array_equal(merged["plm"]["w"], st2.params["plm"]["w"])


def test_init_rule(tmp_path):
  ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=1,
                                 save_interval_steps=1, async_save=False)
  assert checkpoint.init_rule(ckpt, None) == "scratch"
  assert checkpoint.init_rule(ckpt, "/some/pretrain") == "init_from"
  ckpt.save(1, {"x": jnp.ones(2)})
  assert checkpoint.init_rule(ckpt, "/some/pretrain") == "resume"
  ckpt.close()


def test_relative_workdir_saves_and_restores(tmp_path, monkeypatch):
  """Launchers pass --workdir as typed (relative); orbax needs absolute."""
  monkeypatch.chdir(tmp_path)
  tree = {"w": jax.device_put(np.arange(6, dtype=np.float32).reshape(2, 3))}
  ckpt = checkpoint.Checkpointer("rel/best", max_to_keep=1,
                                 save_interval_steps=1, async_save=False)
  assert ckpt.save(3, tree, force=True)
  ckpt.wait_until_finished()
  assert ckpt.directory == str(tmp_path / "rel" / "best" / "checkpoints")
  got = ckpt.restore(3, checkpoint.abstract_like(tree))
  ckpt.close()
  np.testing.assert_array_equal(np.asarray(got["w"]), np.asarray(tree["w"]))
