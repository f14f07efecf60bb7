"""Ctrl-C during a save stops the run once the save is complete, always.

Defect class: a KeyboardInterrupt raised inside orbax's save machinery could
land in an object finaliser (orbax drops event loops and tasks while it
saves), where Python prints 'Exception ignored' and carries on: the first
Ctrl-C was swallowed. Elsewhere it cut the save half-way, and a Ctrl-C
during training lost the async save still being written (Python shuts its
thread pools before it joins the writer). Now SIGINT is deferred while a
save runs and raised after it; a pending async save completes at exit.
"""
import os
import signal
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from flip_jax import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def default_sigint():
  """Python's own SIGINT handler, as in a terminal (test runners and
  background shells may ignore SIGINT)."""
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  yield
  signal.signal(signal.SIGINT, previous)


def _state():
  return {"w": jnp.arange(4096.0).reshape(64, 64), "b": jnp.ones((64,))}


def _ctrl_c():
  os.kill(os.getpid(), signal.SIGINT)
  for _ in range(1000):  # Python runs the handler at the next bytecodes
    pass


class _Finaliser:
  def __del__(self):
    _ctrl_c()


def _patch_save(ckpt, before):
  real = ckpt._mgr.save  # pylint: disable=protected-access

  def save(*args, **kwargs):
    before()
    return real(*args, **kwargs)
  ckpt._mgr.save = save  # pylint: disable=protected-access


def _finished_steps(root):
  return sorted(n for n in os.listdir(root / "checkpoints"))


def test_ctrl_c_in_a_finaliser_during_a_save_is_not_lost(tmp_path):
  ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=None,
                                 save_interval_steps=1, async_save=False)
  _patch_save(ckpt, _Finaliser)  # made and dropped: its __del__ runs there
  with pytest.raises(KeyboardInterrupt, match="it was completed first"):
    ckpt.save(1, _state(), force=True)
  ckpt.close()
  assert _finished_steps(tmp_path) == ["1"]


@pytest.mark.parametrize("async_save", [False, True])
def test_ctrl_c_during_a_save_stops_after_the_step_is_complete(
    tmp_path, async_save):
  ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=None,
                                 save_interval_steps=1, async_save=async_save)
  _patch_save(ckpt, _ctrl_c)
  with pytest.raises(KeyboardInterrupt) as e:
    ckpt.save(1, _state(), force=True)
  assert _finished_steps(tmp_path) == ["1"]  # whole, not a temporary folder
  assert "saving checkpoint step 1; it was completed first" in str(e.value)
  ckpt.close()
  fresh = checkpoint.Checkpointer(tmp_path, max_to_keep=None,
                                  save_interval_steps=1, async_save=False)
  np.testing.assert_array_equal(
      fresh.restore(1, checkpoint.abstract_like(_state()))["w"], _state()["w"])
  fresh.close()
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_stops_at_once(tmp_path):
  ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=None,
                                 save_interval_steps=1, async_save=False)
  _patch_save(ckpt, lambda: (_ctrl_c(), _ctrl_c()))
  with pytest.raises(KeyboardInterrupt, match="second Ctrl-C"):
    ckpt.save(1, _state(), force=True)
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
  assert ckpt.all_steps() == []


_SCRIPT = r"""
import sys
import jax.numpy as jnp
from flip_jax import checkpoint
ckpt = checkpoint.Checkpointer(sys.argv[1], max_to_keep=None,
                               save_interval_steps=1, async_save=True)
state = {"w%d" % i: jnp.full((256, 256), float(i)) for i in range(16)}
ckpt.save(1, state, force=True)
raise KeyboardInterrupt  # Ctrl-C in training while step 1 is written
"""


def test_an_async_save_in_flight_completes_when_the_run_stops(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=240, check=False)
  assert "KeyboardInterrupt" in proc.stderr, proc.stderr[-3000:]
  assert "cannot schedule new futures" not in proc.stderr, proc.stderr[-3000:]
  assert _finished_steps(tmp_path) == ["1"], proc.stderr[-3000:]
