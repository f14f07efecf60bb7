"""What protects a checkpoint's files: errors, storage checks, Ctrl-C.

* Errors: `CheckpointError` is an OSError (a storage problem: launchers
  print it as one line) and, as before, a RuntimeError;
  `CheckpointDamagedError` is a saved checkpoint that cannot be read back as
  written; `CheckpointMismatchError` (a ValueError) is another model's
  checkpoint, which is not damage.
* `damage_reason(e)`: whether an orbax / TensorStore read error means
  damaged files, and the file and cause in one line.
* `check_storage`: a save refuses up front, with what is kept, where the
  folder is not writable or lacks the space (orbax would fail half-way,
  in background threads, with hundreds of lines).
* `sigint_deferred`: Ctrl-C during a save is acted on once the save is
  complete (a KeyboardInterrupt raised inside orbax's machinery can land in
  an object finaliser, where Python drops it, or leave a half-written step).
"""
from __future__ import annotations

import contextlib
import json
import logging as std_logging
import os
import re
import shutil
import signal
import sys
import threading
import traceback
import weakref

from absl import logging


class CheckpointError(RuntimeError, OSError):
  """A checkpoint could not be saved, or no saved one can be restored."""


class CheckpointDamagedError(CheckpointError):
  """A saved checkpoint whose files do not read back as they were written."""


class CheckpointMismatchError(ValueError):
  """A checkpoint written by another model or config (not damage)."""


# TensorStore / orbax wording of unreadable or changed files.
_DAMAGE_MARKERS = ("OUT_OF_RANGE", "DATA_LOSS", "checksum", "orrupt",
                   "Error reading", "Error decoding", "Error opening",
                   "NOT_FOUND", "not valid for value of size",
                   "Unexpected end", "Expecting value", "Metadata file")
_FILE = re.compile(r'local file "([^"]+)"')
_ARRAY = re.compile(r'Error (?:reading|writing) "([^"/]+)[/"]')


def _chain(e: BaseException) -> list[BaseException]:
  out = []
  while e is not None and e not in out:
    out.append(e)
    e = e.__cause__ or e.__context__
  return out


def damage_reason(e: BaseException) -> str | None:
  """One line (file and cause) if reading a checkpoint failed with `e`
  because its files are damaged; None for other failures (another model's
  checkpoint, out of memory, a bug), which must not set a checkpoint aside.
  """
  chain = _chain(e)
  if any(isinstance(x, (CheckpointMismatchError, MemoryError))
         or "RESOURCE_EXHAUSTED" in str(x) for x in chain):
    return None  # another model's checkpoint; out of memory
  if isinstance(e, CheckpointDamagedError):
    return str(e)
  for x in chain:
    if isinstance(x, (OSError, EOFError, KeyError, UnicodeError,
                      json.JSONDecodeError)) or (
        isinstance(x, Exception) and any(m in str(x) for m in _DAMAGE_MARKERS)):
      return describe(chain)
  return None


def describe(chain: list[BaseException]) -> str:
  """The innermost TensorStore message as 'array A in FILE: cause' (the
  file, or the OCDBT folder when the array's bytes are what is wrong), else
  the first line of the outermost error."""
  for x in reversed(chain):
    text = str(x)
    files = _FILE.findall(text)
    if files:
      cause = text.split(" [tensorstore_spec=")[0].rsplit('": ', 1)[-1]
      array = _ARRAY.search(text)
      what = f"array {array.group(1)} in " if array else ""
      return f"{what}{files[-1]}: {cause.strip()[:200]}"
  first = (str(chain[0]).strip().splitlines() or [type(chain[0]).__name__])
  return f"{type(chain[0]).__name__}: {first[0][:300]}"


# ----------------------------------------------------------------- storage


def saved_steps(directory: str) -> list[int]:
  """Finished step folders on disk, ascending (orbax's temporary ones are
  named ``<step>.orbax-checkpoint-tmp...``)."""
  try:
    names = os.listdir(directory)
  except OSError:
    return []
  return sorted(int(n) for n in names if n.isdigit()
                and os.path.isdir(os.path.join(directory, n)))


def kept_note(directory: str, *, exclude: int | None = None) -> str:
  """What a failed save leaves: the newest finished step, or none."""
  steps = [s for s in saved_steps(directory) if s != exclude]
  if not steps:
    return "no checkpoint of this run had been saved yet"
  return (f"the last good checkpoint, step {steps[-1]}, is kept in "
          f"{os.path.join(directory, str(steps[-1]))}")


def _tree_bytes(path: str) -> int:
  total = 0
  for root, _, files in os.walk(path):
    for name in files:
      with contextlib.suppress(OSError):
        total += os.path.getsize(os.path.join(root, name))
  return total


def check_storage(directory: str, step: int) -> None:
  """Raises CheckpointError (one line, saying what is kept) where a save of
  `step` into `directory` cannot succeed: a folder that is not writable
  (read-only filesystem, permissions) or a disk without room for another
  checkpoint the size of the newest one (compressed on disk, so the
  arrays' own size would overstate it)."""
  probe = os.path.join(directory, f".write_probe.{os.getpid()}")
  try:
    with open(probe, "wb") as f:
      f.write(b"0" * 4096)
      f.flush()
      os.fsync(f.fileno())
    os.remove(probe)
  except OSError as e:
    with contextlib.suppress(OSError):
      os.remove(probe)
    raise CheckpointError(
        f"cannot save checkpoint step {step}: {directory} is not writable "
        f"({e.strerror or e}); {kept_note(directory)}") from e
  steps = saved_steps(directory)
  if not steps:
    return  # nothing to size it by: a failed write still ends in one line
  need = int(_tree_bytes(os.path.join(directory, str(steps[-1]))) * 1.1)
  free = shutil.disk_usage(directory).free
  if free < need:
    raise CheckpointError(
        f"cannot save checkpoint step {step}: {directory} has "
        f"{free / 2**20:.1f} MiB free, a checkpoint takes about "
        f"{need / 2**20:.1f} MiB (disk full?); {kept_note(directory)}")


def remove_partial(directory: str, step: int | None) -> None:
  """Removes what a failed save of `step` wrote (orbax's temporary folder;
  the next Checkpointer would, but a full disk wants the room now)."""
  if step is None:
    return
  for name in os.listdir(directory) if os.path.isdir(directory) else []:
    if name.startswith(f"{step}.orbax-checkpoint-tmp"):
      shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


def save_failed(directory: str, step, e: BaseException) -> CheckpointError:
  """The one-line error of a save that failed while writing."""
  return CheckpointError(
      f"saving checkpoint step {step} to {directory} failed "
      f"({describe(_chain(e))}); "
      f"{kept_note(directory, exclude=step if step is not None else None)}")


# ------------------------------------------------------------------ Ctrl-C


class _CtrlC:
  received = False


@contextlib.contextmanager
def sigint_deferred(what: str):
  """Runs the body with Ctrl-C (SIGINT) deferred to its end.

  The first Ctrl-C is recorded (a warning says so) and raised as
  KeyboardInterrupt once the body has finished, so a save is never cut
  half-way, and never dropped; a second one raises at once. Only in the
  main thread, and only while SIGINT has Python's default handler (else
  nothing changes: nested uses, an ignored SIGINT, an application's own
  handler). Yields an object whose ``received`` tells the body.
  """
  flag = _CtrlC()
  if (threading.current_thread() is not threading.main_thread()
      or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
    yield flag
    return

  def handler(signum, frame):
    del signum, frame
    if flag.received:
      raise KeyboardInterrupt(f"second Ctrl-C while {what}")
    flag.received = True
    logging.warning("Ctrl-C: finishing %s first, then stopping (Ctrl-C "
                    "again stops at once)", what)

  signal.signal(signal.SIGINT, handler)
  try:
    yield flag
  except BaseException as e:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if flag.received and not isinstance(e, KeyboardInterrupt):
      raise KeyboardInterrupt(f"Ctrl-C while {what}") from e
    raise
  signal.signal(signal.SIGINT, signal.default_int_handler)
  if flag.received:
    raise KeyboardInterrupt(f"Ctrl-C while {what}; it was completed first")


# ------------------------------------------------------------ process exit

_PENDING = weakref.WeakSet()
_HOOKED = []


def finish_at_exit(checkpointer) -> None:
  """Lets `checkpointer`'s pending async save complete at interpreter exit.

  A run stopped by an exception (Ctrl-C, an error) while a save is written
  in the background would otherwise lose it half-way, with tracebacks:
  Python shuts its thread pools down before it joins the writer. The hook
  runs before that shutdown (it is registered after the pools' own).
  """
  _PENDING.add(checkpointer)
  if _HOOKED:
    return
  import concurrent.futures.thread  # pylint: disable=g-import-not-at-top,unused-import
  register = getattr(threading, "_register_atexit", None)
  if register is not None:
    with contextlib.suppress(RuntimeError):  # already shutting down
      register(_finish_pending)
      _HOOKED.append(True)


def forget_at_exit(checkpointer) -> None:
  _PENDING.discard(checkpointer)


def _finish_pending() -> None:
  for checkpointer in list(_PENDING):
    try:
      checkpointer.wait_until_finished()
    except BaseException as e:  # pylint: disable=broad-except
      logging.warning("checkpoint: a pending save could not be finished at "
                      "exit: %s", str(e).splitlines()[0][:300])


# ------------------------------------------------------------------- noise


def _verbose() -> bool:
  if os.environ.get("FLIP_JAX_TRACEBACK", "").strip() not in ("", "0"):
    return True
  try:
    return logging.get_verbosity() >= 1
  except Exception:  # pylint: disable=broad-except
    return False


class _OrbaxOneLine(std_logging.Filter):
  """Orbax's failure records without their tracebacks (one line each).

  A failed write is raised to the caller as one CheckpointError; orbax also
  logs it from every thread and asyncio task that took part, each with a
  traceback. Kept whole with --verbosity=1 or FLIP_JAX_TRACEBACK=1.
  """

  def filter(self, record: std_logging.LogRecord) -> bool:
    if not record.exc_info or record.exc_info[2] is None or _verbose():
      return True
    if not _from_orbax(record.exc_info[2]):
      return True
    if record.name == "asyncio":  # 'exception was never retrieved' echoes
      return False
    message = record.getMessage().strip().splitlines()
    record.msg = message[0][:500] if message else ""
    record.args = None
    record.exc_info = record.exc_text = None
    return True


def _from_orbax(tb) -> bool:
  return tb is not None and any(f"{os.sep}orbax{os.sep}" in f.filename
                                for f in traceback.extract_tb(tb))


def _closed_loop(unraisable) -> bool:
  """TensorStore finishing an I/O that an abandoned orbax task awaited: its
  callback finds the task's event loop closed (nobody waits any more)."""
  frames = (traceback.extract_tb(unraisable.exc_traceback)
            if unraisable.exc_traceback is not None else [])
  return (isinstance(unraisable.exc_value, RuntimeError)
          and str(unraisable.exc_value) == "Event loop is closed"
          and bool(frames) and all(f"{os.sep}asyncio{os.sep}" in f.filename
                                   for f in frames))


def _unraisable_hook(previous):
  """Drops what orbax's abandoned tasks print after a failed read or write
  (GeneratorExit turned into 'Exception ignored in: <coroutine ...>', and
  'Event loop is closed' from their I/O callbacks): the failure itself was
  raised. Kept with --verbosity=1 or FLIP_JAX_TRACEBACK=1."""

  def hook(unraisable):
    if not _verbose() and (_from_orbax(unraisable.exc_traceback)
                           or _closed_loop(unraisable)):
      return
    previous(unraisable)
  hook.flip_jax_quiet = True
  return hook


def quiet_orbax_failures() -> None:
  """Installs `_OrbaxOneLine` on the absl and asyncio loggers and the
  unraisable-exception filter (once each)."""
  for name in ("absl", "asyncio"):
    logger = std_logging.getLogger(name)
    if not any(isinstance(f, _OrbaxOneLine) for f in logger.filters):
      logger.addFilter(_OrbaxOneLine())
  if not getattr(sys.unraisablehook, "flip_jax_quiet", False):
    sys.unraisablehook = _unraisable_hook(sys.unraisablehook)
