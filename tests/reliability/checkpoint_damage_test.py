"""Damaged checkpoint arrays are caught where they are read.

Defect class: a truncated or bit-rotted array in a checkpoint's data file
surfaced as orbax's OUT_OF_RANGE / 'Event loop is closed' tracebacks (resume
and `best/` reads), or was restored silently with other values; with every
checkpoint set aside a rerun started from scratch over the run's results.
Now every restore is verified against the digest written with the step, a
resume takes the newest intact step, a `best/` or init-from read fails with
one line naming the file, and a workdir without an intact checkpoint is
refused.
"""
import glob
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from flip_jax import checkpoint
from flip_jax import checkpoint_digest
from flip_jax import checkpoint_guard


def _tree(seed):
  rng = np.random.default_rng(seed)
  return {"params": {"w": jnp.asarray(rng.normal(size=(40, 50)), jnp.float32),
                     "b": jnp.asarray(rng.normal(size=(50,)), jnp.float32)},
          "count": jnp.asarray(seed, jnp.int32)}


def _save(root, steps=(1, 2)):
  ckpt = checkpoint.Checkpointer(root, max_to_keep=None,
                                 save_interval_steps=1, async_save=False)
  for s in steps:
    assert ckpt.save(s, _tree(s), force=True)
  ckpt.close()


def _data_file(root, step):
  """The largest array data file of a step (the one holding 'w')."""
  files = glob.glob(str(root / "checkpoints" / str(step) / "state" / "**" /
                        "d" / "*"), recursive=True)
  return max(files, key=os.path.getsize)


def _truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _flip(path):
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0x40]))


def _abstract():
  return checkpoint.abstract_like(_tree(0))


@pytest.mark.parametrize("damage", [_truncate, _flip])
def test_resume_takes_the_newest_intact_step(tmp_path, damage):
  _save(tmp_path)
  damage(_data_file(tmp_path, 2))
  ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=None,
                                 save_interval_steps=1, async_save=False)
  state, step = ckpt.restore_latest_good(_abstract())
  assert step == 1
  np.testing.assert_array_equal(state["params"]["w"], _tree(1)["params"]["w"])
  assert ckpt.all_steps() == [1]
  assert os.listdir(tmp_path / checkpoint.DAMAGED_DIR) == ["2"]
  ckpt.close()


def test_changed_bytes_are_not_restored_silently(tmp_path):
  _save(tmp_path)
  _flip(_data_file(tmp_path, 2))
  ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=None,
                                 save_interval_steps=1, async_save=False)
  with pytest.raises(checkpoint.CheckpointDamagedError,
                     match=r"checkpoints/2 is damaged: params/w read back "
                     r"other values than were saved \(digest mismatch"):
    ckpt.restore(2, _abstract())
  ckpt.close()


@pytest.mark.parametrize("damage", [_truncate, _flip])
def test_best_read_fails_in_one_line_naming_the_file(tmp_path, damage):
  best = tmp_path / "best"
  _save(best, steps=(3,))
  path = _data_file(best, 3)
  damage(path)
  with pytest.raises(checkpoint.CheckpointDamagedError) as e:
    checkpoint.restore_variables(best, step=3)
  msg = str(e.value)
  assert "\n" not in msg and len(msg) < 700, msg
  assert f"checkpoint {best}/checkpoints/3 is damaged" in msg
  assert "restore the folder from a backup" in msg
  assert "params.w in " + str(best / "checkpoints" / "3" / "state") in msg or (
      "params/w read back other values" in msg), msg
  assert os.path.getsize(path)  # kept, not deleted


def test_init_from_read_names_the_other_steps(tmp_path):
  _save(tmp_path)
  _truncate(_data_file(tmp_path, 2))
  with pytest.raises(checkpoint.CheckpointDamagedError,
                     match=r"choose another step with --config.ckpt.init_step "
                     r"\(available: \[1\]\)"):
    checkpoint.restore_params(tmp_path)
  np.testing.assert_array_equal(checkpoint.restore_params(tmp_path, step=1)["w"],
                                _tree(1)["params"]["w"])


def test_every_checkpoint_damaged_refuses_every_rerun(tmp_path):
  _save(tmp_path)
  for step in (1, 2):
    _truncate(_data_file(tmp_path, step))
  ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=None,
                                 save_interval_steps=1, async_save=False)
  with pytest.raises(checkpoint.CheckpointDamagedError,
                     match="no usable checkpoint .* every one is damaged"):
    ckpt.restore_latest_good(_abstract())
  ckpt.close()
  # The next rerun finds no checkpoint left: it must not start afresh.
  again = checkpoint.Checkpointer(tmp_path, max_to_keep=None,
                                  save_interval_steps=1, async_save=False)
  with pytest.raises(checkpoint.CheckpointDamagedError,
                     match=r"not starting from scratch .* delete "):
    again.latest_step()
  again.close()
  assert sorted(os.listdir(tmp_path / checkpoint.DAMAGED_DIR)) == ["1", "2"]


def test_another_models_checkpoint_is_not_set_aside(tmp_path):
  _save(tmp_path)
  ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=None,
                                 save_interval_steps=1, async_save=False)
  other = jax.tree.map(lambda x: x, _abstract())
  other["params"]["b"] = jax.ShapeDtypeStruct((7,), jnp.float32,
                                              sharding=other["count"].sharding)
  with pytest.raises(checkpoint.CheckpointMismatchError, match="shape"):
    ckpt.restore_latest_good(other)
  assert ckpt.all_steps() == [1, 2]
  ckpt.close()


def test_checkpoints_written_before_the_digest_still_restore(tmp_path):
  _save(tmp_path)
  shutil.rmtree(tmp_path / "checkpoints" / "2" / checkpoint.DIGEST)
  ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=None,
                                 save_interval_steps=1, async_save=False)
  np.testing.assert_array_equal(ckpt.restore(2, _abstract())["params"]["w"],
                                _tree(2)["params"]["w"])
  ckpt.close()
  np.testing.assert_array_equal(checkpoint.restore_params(tmp_path)["w"],
                                _tree(2)["params"]["w"])


def test_a_leaf_restored_as_another_dtype_is_not_damage(tmp_path):
  _save(tmp_path)
  ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=None,
                                 save_interval_steps=1, async_save=False)
  abstract = _abstract()
  w = abstract["params"]["w"]
  abstract["params"]["w"] = jax.ShapeDtypeStruct(w.shape, jnp.bfloat16,
                                                 sharding=w.sharding)
  got = ckpt.restore(2, abstract)
  assert got["params"]["w"].dtype == jnp.bfloat16
  ckpt.close()


def test_out_of_memory_is_not_damage():
  oom = ValueError("RESOURCE_EXHAUSTED: Error reading \"params.w/0\" in "
                   "OCDBT database at local file \"/x/state/\": out of memory")
  assert checkpoint_guard.damage_reason(oom) is None
  assert checkpoint_guard.damage_reason(MemoryError()) is None
  assert "array params.w in /x/state/" in checkpoint_guard.damage_reason(
      ValueError(str(oom).replace("RESOURCE_EXHAUSTED", "DATA_LOSS")))


def test_digest_is_layout_free_and_the_numpy_twin_agrees():
  mesh = jax.make_mesh((len(jax.devices()),), ("d",))
  rng = np.random.default_rng(0)
  host = {"f32": rng.normal(size=(8, 6)).astype(np.float32),
          "bf16": rng.normal(size=(8, 3)).astype(jnp.bfloat16),
          "i8": rng.integers(-9, 9, (16,)).astype(np.int8),
          "u32": rng.integers(0, 2**32, (2, 4), dtype=np.uint32),
          "flag": np.array([True, False]), "scalar": np.float32(3.5),
          # Several of the numpy twin's chunks (2**16 words), the last
          # partial; all-ones words make every sum wrap modulo 2**32.
          "chunks": rng.integers(0, 2**32, (3 * 2**16 + 5,), dtype=np.uint32),
          "ones": np.full((2**16 + 8,), 0xFFFFFFFF, np.uint32)}
  sharded = {k: jax.device_put(v, NamedSharding(
      mesh, P("d") if np.ndim(v) and v.shape[0] % 8 == 0 else P()))
             for k, v in host.items()}
  want = checkpoint_digest.digest(host)
  assert checkpoint_digest.digest(sharded) == want  # numpy: CPU arrays
  # The device pass (accelerators, arrays held in part) gives the same.
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(checkpoint_digest, "on_host", lambda leaf: False)
    assert checkpoint_digest.digest(sharded) == want
    assert checkpoint.non_finite_leaves(sharded) == []
    bad = host["f32"].copy()
    bad[1, 2] = np.inf
    sharded["f32"] = jax.device_put(bad, sharded["f32"].sharding)
    assert checkpoint.non_finite_leaves(sharded) == ["f32"]
  assert checkpoint.non_finite_leaves(sharded) == ["f32"]
  changed = dict(host, f32=host["f32"].copy())
  changed["f32"].view(np.uint32)[3, 2] ^= 1
  assert checkpoint_digest.mismatches(changed, want) == ["f32"]
