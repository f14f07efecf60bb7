"""A full or read-only disk ends a save with one line saying what is kept.

Defect class: a full disk during a save, or a workdir made read-only
mid-run, ended in hundreds of lines: orbax's per-thread tracebacks, the
CheckpointError's own traceback, and interpreter-teardown noise
(`ImportError: sys.meta_path is None`) from the writer it left running.
Now a save that cannot fit or cannot write is refused before orbax starts,
one that fails while writing releases orbax at once, and launchers print
one `error:` line naming the last good step.
"""
import errno
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from orbax.checkpoint._src.serialization import serialization

from experiments import launch
from flip_jax import checkpoint
from flip_jax import checkpoint_guard

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _state(v=1.0):
  return {"w": jnp.full((64, 64), v), "b": jnp.zeros((64,))}


def _disk_full(arr):  # where orbax is about to hand a fragment to TensorStore
  del arr
  raise OSError(errno.ENOSPC, "No space left on device")


def test_no_room_is_refused_before_writing(tmp_path, monkeypatch):
  ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=None,
                                 save_interval_steps=1, async_save=False)
  assert ckpt.save(1, _state(), force=True)
  usage = checkpoint_guard.shutil.disk_usage(tmp_path)
  monkeypatch.setattr(checkpoint_guard.shutil, "disk_usage",
                      lambda p: usage._replace(free=1024))
  with pytest.raises(checkpoint.CheckpointError) as e:
    ckpt.save(2, _state(2.0), force=True)
  assert str(e.value) == (
      f"cannot save checkpoint step 2: {ckpt.directory} has 0.0 MiB free, "
      "a checkpoint takes about 0.0 MiB (disk full?); the last good "
      f"checkpoint, step 1, is kept in {ckpt.directory}/1")
  assert sorted(os.listdir(ckpt.directory)) == ["1"]  # nothing half-written
  ckpt.close()


@pytest.mark.parametrize("async_save", [False, True])
def test_failed_write_is_one_error_and_keeps_the_last_step(
    tmp_path, monkeypatch, async_save):
  ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=None,
                                 save_interval_steps=1, async_save=async_save)
  ckpt.save(1, _state(), force=True)
  ckpt.wait_until_finished()
  monkeypatch.setattr(serialization, "estimate_write_memory_footprint",
                      _disk_full)
  with pytest.raises(checkpoint.CheckpointError) as e:
    ckpt.save(2, _state(2.0), force=True)
    ckpt.wait_until_finished()  # an async save fails here
  msg = str(e.value)
  assert "\n" not in msg and "saving checkpoint step 2 to" in msg, msg
  assert "No space left on device" in msg, msg
  assert msg.endswith(f"the last good checkpoint, step 1, is kept in "
                      f"{ckpt.directory}/1"), msg
  ckpt.close()  # released already: nothing left to wait for
  with pytest.raises(checkpoint.CheckpointError, match="step 2"):
    ckpt.save(3, _state(), force=True)
  monkeypatch.undo()
  fresh = checkpoint.Checkpointer(tmp_path, max_to_keep=None,
                                  save_interval_steps=1, async_save=False)
  assert fresh.all_steps() == [1]
  np.testing.assert_array_equal(
      fresh.restore(1, checkpoint.abstract_like(_state()))["w"], _state()["w"])
  fresh.close()


def test_checkpoint_errors_are_one_line_at_launchers():
  e = checkpoint.CheckpointError("cannot save checkpoint step 2: x")
  assert launch.is_expected(e) and isinstance(e, RuntimeError)
  assert launch.is_expected(checkpoint.CheckpointDamagedError("y"))
  assert launch.error_message(e) == "cannot save checkpoint step 2: x"


_SCRIPT = r"""
import errno, sys
import jax.numpy as jnp
from experiments import launch
from flip_jax import checkpoint
from orbax.checkpoint._src.serialization import serialization

def main(argv):
  del argv
  ckpt = checkpoint.Checkpointer(sys.argv[1], max_to_keep=None,
                                 save_interval_steps=1, async_save=True)
  state = {"w%d" % i: jnp.full((128, 64), float(i)) for i in range(8)}
  ckpt.save(1, state, force=True)
  ckpt.wait_until_finished()
  def full(arr):
    raise OSError(errno.ENOSPC, "No space left on device")
  serialization.estimate_write_memory_footprint = full
  ckpt.save(2, state, force=True)
  ckpt.save(3, state, force=True)

launch.run_main(main)
"""


def test_launcher_ends_with_one_line_and_no_teardown_noise(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", FLIP_JAX_TRACEBACK="0")
  proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=240, check=False)
  assert proc.returncode == 1, proc.stderr[-3000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1, proc.stderr[-3000:]
  assert errors[0].endswith("the last good checkpoint, step 1, is kept in "
                            f"{tmp_path}/checkpoints/1"), errors[0]
  for noise in ("Traceback", "meta_path", "Exception ignored",
                "Event loop is closed", "never retrieved"):
    assert noise not in proc.stderr, proc.stderr[-3000:]
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]  # no partial
