"""JAX's persistent compilation cache: one folder shared by every process.

Every launcher (`experiments.launch`) calls `setup`: the stages and seeds
of a run, later runs and other launchers then load the XLA programs they
compiled before instead of compiling them again. The folder is chosen by,
first to last: the launchers' --compile_cache flag, the environment
variable FLIP_JAX_COMPILE_CACHE, JAX's own JAX_COMPILATION_CACHE_DIR, and
the per-user default `$XDG_CACHE_HOME/flip_jax/jax_compile` (else
`~/.cache/flip_jax/jax_compile`). The value `off` turns the cache off.

Entries are keyed by the program, the jax / XLA versions, the devices and
the XLA flags, so one folder serves CPU, GPU and test runs alike. JAX
trusts what it loads: never point the cache at a folder others can write.

On a CPU backend with several devices (`--xla_force_host_platform_device_
count`, the tests' 8 fake devices, or several CPU processes) `check_backend`
keeps the cache for the programs without collectives only: with jax
0.10.2, the sharded pretraining step loaded from the cache deadlocks in
XLA:CPU's in-process collectives (devices wait in different all-gather /
all-reduce rendezvous until XLA aborts the process after 40 s), while the
same step compiled afresh runs. Reproduce with `python -m
benchmarks.cpu_cache_collectives`. Two CPU processes fare no better: the
two-host pretraining loading its sharded programs from the cache timed out
creating its gloo context in the first step (RESULTS.md, 2026-12-07, stop
43). Whether a program has collectives is known once XLA has partitioned
it, so the filter is on writing: a program whose compiled HLO holds a
collective (all-reduce, all-gather, ...) is not stored, and is compiled
afresh by every process; one without (a state initialiser, a prediction,
an eager op, any program on one device) is stored and loaded like on any
other backend. Where jax lacks the private hook this filter wraps, the
cache is turned off instead.
"""
from __future__ import annotations

import functools
import os
import re

from absl import logging

# jax is imported by the functions that use it, not here: a launcher defines
# its --compile_cache flag from this module (ENV, default_dir) and parses
# its command line and config before it imports jax (a mistake there is
# reported in a fraction of a second; experiments/launch.py).

ENV = "FLIP_JAX_COMPILE_CACHE"
JAX_ENV = "JAX_COMPILATION_CACHE_DIR"
OFF = "off"
_OFF_VALUES = frozenset({"off", "none", "false", "0"})

# jax.monitoring events of the persistent cache (jax/_src/compiler.py,
# compilation_cache.py): a lookup, a hit, an entry written (jax names
# it a miss: it is recorded when a compiled program is stored).
_EVENTS = {"/jax/compilation_cache/compile_requests_use_cache": "requests",
           "/jax/compilation_cache/cache_hits": "hits",
           "/jax/compilation_cache/cache_misses": "writes"}
_SAVED_EVENT = "/jax/compilation_cache/compile_time_saved_sec"

_state = {"folder": None, "configured": False, "listening": False,
          "logged": None, "unsafe": None, "filtered": None}
# HLO instructions that make a program unsafe to load on XLA:CPU with
# several devices (see the module docstring): `%x = f32[] all-reduce(...)`.
_COLLECTIVE = re.compile(
    r" (all-reduce|all-gather|reduce-scatter|collective-permute|all-to-all|"
    r"ragged-all-to-all|collective-broadcast|send|recv)(-start)?\(")
_stats = {"requests": 0, "hits": 0, "writes": 0, "saved_s": 0.0}


def default_dir(environ=None) -> str:
  """The per-user folder: $XDG_CACHE_HOME/flip_jax/jax_compile."""
  environ = os.environ if environ is None else environ
  root = environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return os.path.join(root, "flip_jax", "jax_compile")


def is_off(value: str | None) -> bool:
  """Whether a flag / environment value turns the cache off."""
  return value is not None and value.strip().lower() in _OFF_VALUES


def resolve(value: str | None = None, environ=None) -> str | None:
  """The cache folder for a flag value (None: not given); None when off.

  Precedence: `value`, FLIP_JAX_COMPILE_CACHE, JAX_COMPILATION_CACHE_DIR,
  `default_dir()`. Empty strings count as not given.
  """
  environ = os.environ if environ is None else environ
  for candidate in (value, environ.get(ENV), environ.get(JAX_ENV)):
    if candidate is not None and candidate.strip():
      if is_off(candidate):
        return None
      return os.path.abspath(os.path.expanduser(candidate.strip()))
  return default_dir(environ)


def _apply(folder: str | None) -> None:
  """Points jax at `folder` (None: off), dropping a cache opened before."""
  # pylint: disable=g-import-not-at-top
  import jax
  from jax.experimental.compilation_cache import compilation_cache as jax_cc
  # pylint: enable=g-import-not-at-top
  jax_cc.reset_cache()  # jax opens its cache once per process otherwise
  if folder is None:
    jax.config.update("jax_enable_compilation_cache", False)
    return
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", folder)
  # Cache every program: the small CPU ones compile in well under jax's
  # default 1 s threshold, and -1 lifts the entry size floor for good.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def setup(value: str | None = None) -> str | None:
  """Turns the persistent cache on in the folder `resolve(value)` names.

  Safe to call again: the folder is logged when it changes. A folder that
  cannot be created turns the cache off with a warning (the run goes on,
  compiling as without a cache).

  Args:
    value: the --compile_cache flag's value (None: not given), a folder or
      `off`.

  Returns:
    The folder in use, or None when the cache is off.
  """
  folder = resolve(value)
  if folder is not None and _state["unsafe"]:
    folder = None  # check_backend found this backend unsafe
  if folder is not None:
    try:
      os.makedirs(folder, exist_ok=True)
    except OSError as e:
      logging.warning("compile cache off: cannot create %s (%s)", folder, e)
      folder = None
  _listen()
  if _state["configured"] and folder == _state["folder"]:
    return folder
  _apply(folder)
  _state.update(folder=folder, configured=True)
  if folder is None:
    logging.info("compile cache: off")
  else:
    logging.info("compile cache: %s (--compile_cache=off turns it off)",
                 folder)
  return folder


def unsafe_reason(platform: str, num_devices: int) -> str | None:
  """Why the cache must stay off on a backend; None where it is safe.

  Args:
    platform: `jax.default_backend()` ('cpu', 'gpu', 'tpu').
    num_devices: `jax.device_count()` (all processes).
  """
  if platform == "cpu" and num_devices > 1:
    import jax  # pylint: disable=g-import-not-at-top
    return (f"{num_devices} CPU devices: XLA:CPU collectives in programs "
            f"loaded from the cache deadlock with jax {jax.__version__} "
            "(see flip_jax/compile_cache.py)")
  return None


def check_backend() -> str | None:
  """Where `unsafe_reason` says so, keeps the cache for programs without
  collectives only (`collective_free_programs_only`), else turns it off,
  for good in this process; returns the folder in use (None: off).

  Call it once the backend may start (after `jax.distributed.initialize`):
  it asks jax for the platform and the device count.
  """
  if _state["folder"] is None:
    return None
  import jax  # pylint: disable=g-import-not-at-top
  reason = unsafe_reason(jax.default_backend(), jax.device_count())
  if reason and collective_free_programs_only():
    if _state["filtered"] != reason:
      logging.warning("compile cache for programs without collectives "
                      "only: %s", reason)
    _state.update(filtered=reason)
  elif reason:
    logging.warning("compile cache off: %s", reason)
    _apply(None)
    _state.update(folder=None, unsafe=reason)
  return _state["folder"]


def has_collectives(executable) -> bool:
  """Whether a compiled program (a jaxlib LoadedExecutable) holds a
  collective instruction in its HLO, as XLA partitioned it."""
  return any(_COLLECTIVE.search(module.to_string())
             for module in executable.hlo_modules())


def collective_free_programs_only() -> bool:
  """Makes jax store no program with collectives in the persistent cache,
  in this process, for good: those are compiled afresh every time (never
  in the folder, never loaded); the others are stored and loaded. False
  where this jax lacks the hook.

  Wraps jax's private `compiler._cache_write` (jax 0.10), which stores a
  program just compiled. A folder only this filter has written to on such
  a backend holds no program with collectives; the per-user folder and the
  tests' are written by the project's processes only.
  """
  try:
    from jax._src import compiler  # pylint: disable=g-import-not-at-top
    cache_write = compiler._cache_write  # pylint: disable=protected-access
  except (ImportError, AttributeError):
    return False
  if getattr(cache_write, "collective_free_only", False):
    return True

  @functools.wraps(cache_write)
  def collective_free_only(cache_key, compile_time_secs, module_name,
                           backend, executable, *args, **kwargs):
    try:
      unsafe = has_collectives(executable)
    except Exception:  # pylint: disable=broad-except
      unsafe = True  # unreadable HLO: not stored, the safe side
    if not unsafe:
      cache_write(cache_key, compile_time_secs, module_name, backend,
                  executable, *args, **kwargs)

  collective_free_only.collective_free_only = True
  compiler._cache_write = collective_free_only  # pylint: disable=protected-access
  return True


def _on_event(event: str, **_) -> None:
  name = _EVENTS.get(event)
  if name:
    _stats[name] += 1


def _on_duration(event: str, duration: float, **_) -> None:
  if event == _SAVED_EVENT:
    _stats["saved_s"] += max(float(duration), 0.0)


def _listen() -> None:
  """Counts the cache's jax.monitoring events (once per process)."""
  if not _state["listening"]:
    from jax import monitoring  # pylint: disable=g-import-not-at-top
    monitoring.register_event_listener(_on_event)
    monitoring.register_event_duration_secs_listener(_on_duration)
    _state["listening"] = True


def stats() -> dict:
  """This process's cache lookups so far: requests, hits, writes and the
  compile seconds the hits saved (as jax recorded them when compiling)."""
  return dict(_stats)


def summary() -> str | None:
  """One line on this process's use of the cache; None if it had none."""
  s = stats()
  if not s["requests"]:
    return None
  return (f"compile cache: {s['hits']} of {s['requests']} programs loaded "
          f"(~{s['saved_s']:.1f}s of compiling saved), {s['writes']} written "
          f"to {_state['folder']}")


def log_use() -> None:
  """Logs `summary()` unless already logged with the same counts (a main
  logs it before its last printed lines, `launch.run_main` after it)."""
  line = summary()
  if line and line != _state["logged"]:
    logging.info("%s", line)
    _state["logged"] = line
