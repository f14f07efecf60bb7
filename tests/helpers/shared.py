"""Test fixtures built once per pytest run and shared by its processes.

xdist's session fixtures are per worker: a fixture every worker uses (the
tiny BERT folder) was built once per worker. ``built(name, build)`` builds
it once per run instead, in the run's shared folder (``SHARED_ENV``, made by
the first pytest process and inherited by its workers, like the compilation
cache), under a file lock: the first process to ask builds, the others wait
and reuse. What is built there is read-only for the tests.
"""
from __future__ import annotations

import fcntl
import os
import pathlib
import shutil
import tempfile
from typing import Callable

SHARED_ENV = "FLIP_JAX_TEST_SHARED"
_DONE = ".built"


def run_folder(env: str, prefix: str) -> bool:
  """The folder named by ``$env``, made empty in the temp folder by the
  first process of the run unless the environment already names one (a
  parent pytest process, or the user); True if made here (its owner removes
  it at the end)."""
  if os.environ.get(env):
    return False
  os.environ[env] = tempfile.mkdtemp(prefix=prefix)
  return True


def built(name: str, build: Callable[[pathlib.Path], object]
          ) -> pathlib.Path:
  """``<shared>/<name>``, built by ``build(path)`` by the first process to
  ask (a build that failed half-way is redone from scratch)."""
  root = pathlib.Path(os.environ[SHARED_ENV])
  out = root / name
  with open(root / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (out / _DONE).exists():
      shutil.rmtree(out, ignore_errors=True)
      build(out)
      (out / _DONE).touch()
  return out
