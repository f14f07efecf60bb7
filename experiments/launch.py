"""Runtime set-up shared by every absl main: multi-host init, logging, the
compilation cache, and `run_main`, which turns expected errors into one
`error: ...` line.

Nothing here imports jax at module level (nor do the config files): a
launcher parses its flags and its config, and reports a mistake there, in a
fraction of a second; jax comes with `init_runtime` and the training code.
"""
import functools
import io
import json
import logging as logging_std
import os
import sys
import traceback
from typing import Any, Callable
import zlib

from absl import app
from absl import flags
from absl import logging

from experiments import config_errors
from flip_jax import compile_cache

_DISTRIBUTED = flags.DEFINE_bool(
    "jax_distributed", False,
    "Call jax.distributed.initialize() (multi-host runs). Arguments come from "
    "--coordinator_address/--num_processes/--process_id when given, else from "
    "the environment (TPU pods, SLURM, JAX_COORDINATOR_ADDRESS ...).")
_COORD = flags.DEFINE_string("coordinator_address", None,
                             "host:port of process 0 (multi-host).")
_NPROC = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PID = flags.DEFINE_integer("process_id", None, "This process's index.")
_COMPILE_CACHE = flags.DEFINE_string(
    "compile_cache", None,
    "Folder of JAX's persistent compilation cache, shared by the stages, "
    "seeds and later runs (compiled programs are loaded, not compiled "
    f"again); 'off' turns it off. Default: ${compile_cache.ENV}, else "
    f"${compile_cache.JAX_ENV}, else {compile_cache.default_dir()}.")


def flag(define, name: str, *args, **kwargs):
  """Defines an absl flag, or reuses it if another entry point already did.

  Several launchers share flag names (--workdir, --config, --dataset ...);
  importing two of them into one process (tests, notebooks) must not raise
  DuplicateFlagError. The returned object has ``.value`` either way.
  """
  if name in flags.FLAGS:
    return flags.FLAGS[name]
  try:
    return define(name, *args, **kwargs)
  except Exception as e:  # pylint: disable=broad-except
    # A config-file flag with a default parses it, and the --<name>.<key>
    # overrides of sys.argv, here: their mistakes are the command line's.
    default = args[0] if args else kwargs.get("default")
    if isinstance(default, str) and any(
        a.startswith((f"--{name}.", f"-{name}.")) for a in sys.argv[1:]):
      _report_flag_error(e, sys.argv, {name: default})
    raise


class _QuietLibraries(logging_std.Filter):
  """Drops INFO chatter of orbax / grain (warnings and errors still pass)."""

  def filter(self, record):
    noisy = ("/orbax/", "/grain/", "/absl/testing/")
    return record.levelno >= logging_std.WARNING or not any(
        n in record.pathname for n in noisy)


def setup_compile_cache() -> str | None:
  """Turns on JAX's persistent compilation cache (`flip_jax.compile_cache`)
  in the folder --compile_cache names; returns it (None: off)."""
  try:
    value = _COMPILE_CACHE.value
  except flags.UnparsedFlagAccessError:  # a library caller: env / default
    value = None
  return compile_cache.setup(value)


def init_runtime() -> None:
  """Initialises jax.distributed when asked, the compilation cache, and
  logs the topology."""
  import jax  # pylint: disable=g-import-not-at-top
  os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  setup_compile_cache()
  if _DISTRIBUTED.value or os.environ.get("JAX_COORDINATOR_ADDRESS"):
    kwargs = {}
    if _COORD.value:
      kwargs = dict(coordinator_address=_COORD.value,
                    num_processes=_NPROC.value, process_id=_PID.value)
    jax.distributed.initialize(**kwargs)
  compile_cache.check_backend()
  logging.info("process %d/%d, %d local / %d global devices (%s)",
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform)


def training_main(default_config: str | None) -> Callable[[list[str]], Any]:
  """The ``main`` of the one training launcher (``experiments.train``; its
  aliases give another ``--config`` default): ``--config`` (a config file
  with :variant, overrides ``--config.<key>=...``) and ``--workdir``;
  rerunning on the same workdir resumes."""
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config = flag(config_flags.DEFINE_config_file, "config", default_config,
                "Config file (with :variant).", lock_config=True)
  workdir = flag(flags.DEFINE_string, "workdir", None, "Run directory.",
                 required=True)

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if config.value is None:
      raise app.UsageError("--config is required")
    init_runtime()
    logging.info("done: %s", run(config.value, workdir.value))
  return main


def run(config, workdir: str):
  """Trains ``config.task`` in ``workdir`` on the shared loop.

  Returns the task's results (evaluated tasks) or its last metrics.
  """
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise NotADirectoryError(f"--workdir {workdir} is a file, not a folder")
  # pylint: disable=g-import-not-at-top
  from flip_jax import methods
  from flip_jax.train import loop
  # pylint: enable=g-import-not-at-top
  methods.check_plm_folder(config)
  return loop.train_and_evaluate(config, workdir, methods.make_task(config))


# ---------------------------------------------------------------------------
# One clear line for expected errors (BUILD.md "Reliability policies").

# Set to 1 (or run with --verbosity=1) to see the traceback of an expected
# error as well.
TRACEBACK_ENV = "FLIP_JAX_TRACEBACK"

# Errors a user can cause and fix: bad or missing data, files and configs
# (flip_jax's DataError, JSONFileError, ConfigMismatchError ... are
# ValueErrors), truncated files, numbers out of range, a missing package.
EXPECTED_ERRORS = (ValueError, KeyError, OSError, EOFError, OverflowError,
                   FloatingPointError, ImportError, zlib.error)
# Expected errors of other libraries or of modules too heavy to import here,
# matched by class name anywhere in the exception's MRO.
EXPECTED_ERROR_NAMES = frozenset({
    "SafetensorError",      # safetensors: truncated / corrupt file
    "WorkdirBusyError",     # flip_jax.train.workdir: another live run
    "ExportCheckError",     # flip_jax.methods.run_export: parity failed
    "DecodeError",          # protobuf / tokenizers file errors
})


def is_expected(e: BaseException) -> bool:
  """True for errors reported as one line (see EXPECTED_ERRORS)."""
  return isinstance(e, EXPECTED_ERRORS) or any(
      c.__name__ in EXPECTED_ERROR_NAMES for c in type(e).__mro__)


_OWN_CODE = tuple(
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                 d) + os.sep for d in ("flip_jax", "experiments"))


def _frames(e: BaseException) -> list:
  tb, frames = e.__traceback__, []
  while tb is not None:
    frames.append(tb.tb_frame)
    tb = tb.tb_next
  return frames


def _file_in_traceback(e: BaseException) -> str | None:
  """The file a library error was reading, when its message names none.

  Only for errors raised inside a library (a truncated safetensors file,
  a corrupt gzip stream): flip_jax's own messages name their files. The
  innermost frame with a local naming an existing file is taken (the
  reader's own `path` / `filename` argument).
  """
  frames = _frames(e)
  if not frames or os.path.abspath(frames[-1].f_code.co_filename).startswith(
      _OWN_CODE):
    return None
  for frame in reversed(frames):
    for value in list(frame.f_locals.values()):
      if isinstance(value, io.IOBase):  # json.load(f) ...: the file read
        value = getattr(value, "name", None)
      if isinstance(value, os.PathLike):
        value = os.fspath(value)
      if (isinstance(value, str) and 0 < len(value) < 4096
          and ("/" in value or "." in value)):
        try:
          if os.path.isfile(value):
            return value
        except (OSError, ValueError):
          continue
  return None


def error_message(e: BaseException) -> str:
  """One line naming what failed: the message, its type, and the file."""
  if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(
      e.args[0], str):
    msg = e.args[0]
    if " " not in msg.strip():  # a bare key: say what it is
      msg = (f"KeyError: {msg!r} (a missing key; --verbosity=1 shows where)")
  elif isinstance(e, json.JSONDecodeError):  # a reader without jsonio
    msg = f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
  else:
    msg = str(e)
  msg = " ".join(line.strip() for line in msg.splitlines() if line.strip())
  module = type(e).__module__ or ""
  if not msg:
    msg = type(e).__name__
  elif not module.startswith(("flip_jax", "experiments")) and not isinstance(
      e, (ValueError, KeyError, OSError, ImportError)):
    msg = f"{type(e).__name__}: {msg}"  # EOFError, SafetensorError ...
  filename = getattr(e, "filename", None)
  if isinstance(filename, (str, os.PathLike)) and os.fspath(filename) in msg:
    filename = None
  if filename is None and os.sep not in msg:
    filename = _file_in_traceback(e)
  if filename is not None and os.fspath(filename) not in msg:
    msg += f" (file {os.fspath(filename)})"
  return msg


def _show_traceback() -> bool:
  if os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0"):
    return True
  try:
    return flags.FLAGS["verbosity"].value >= 1
  except (KeyError, flags.Error):
    return False


def report_and_exit(e: BaseException, *, silence_after: bool = False,
                    message: str | None = None,
                    verbose: bool | None = None) -> None:
  """Prints `error: <one line>` to stderr and exits with status 1.

  With --verbosity>=1 or FLIP_JAX_TRACEBACK=1 the traceback comes first.
  Otherwise, with `silence_after` (the process's own main, `run_main`),
  file descriptor 2 goes to /dev/null after the message, so interpreter
  and library shutdown noise ('Exception ignored' lines, C++ log lines)
  cannot bury it; stdout is flushed as usual.

  Args:
    e: the error (its traceback is the one shown).
    silence_after: see above.
    message: the line to print instead of `error_message(e)`.
    verbose: whether to show the traceback (default: the flags / env).
  """
  verbose = _show_traceback() if verbose is None else verbose
  if verbose:
    traceback.print_exception(type(e), e, e.__traceback__)
  try:
    logging.flush()
  except Exception:  # pylint: disable=broad-except
    pass
  sys.stdout.flush()
  line = error_message(e) if message is None else message
  line = " ".join(l.strip() for l in line.splitlines() if l.strip())
  sys.stderr.write(f"error: {line}\n")
  sys.stderr.flush()
  if silence_after and not verbose:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
  raise SystemExit(1)


def guarded(main: Callable[[list[str]], Any], *,
            silence_after: bool = False) -> Callable[[list[str]], Any]:
  """`main` with expected errors turned into `report_and_exit`."""

  @functools.wraps(main)
  def wrapper(argv):
    try:
      return main(argv)
    except Exception as e:  # pylint: disable=broad-except
      if isinstance(e, app.UsageError) or not is_expected(e):
        raise
      report_and_exit(e, silence_after=silence_after)

  return wrapper


def _without_traceback(msg: str) -> str:
  """A message that embeds a traceback (ml_collections' 'Error whilst
  parsing config file: Traceback ...') with the traceback's last line only
  (the exception it ended in)."""
  head, sep, tb = msg.partition("Traceback (most recent call last):")
  lines = [l.strip() for l in tb.splitlines() if l.strip()]
  return f"{head.strip()} {lines[-1]}" if sep and lines else msg


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, its errors reported as one `error:` line.

  A --config.<key> naming no field (misspelt, or renamed by a redesign)
  is named with its suggestion or new name (`config_errors`); a bad flag
  value (a wrong type ...) or an unknown flag with absl's message. Parsing
  stops at the failing flag, so --verbosity is read from argv itself.
  Other errors (a bug in a config file) keep their traceback.
  """
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    _report_flag_error(e, argv)
    raise


def _report_flag_error(e: Exception, argv: list[str],
                       defaults: dict[str, str] | None = None) -> None:
  """`report_and_exit` for a command-line mistake; returns for a bug."""
  try:
    why = config_errors.flag_error(argv, e, defaults=defaults)
  except Exception:  # pylint: disable=broad-except
    why = None  # the original error is reported below
  if why is None and isinstance(e, flags.Error):
    why = _without_traceback(str(e)).removeprefix("flag ")
    if isinstance(e, flags.UnrecognizedFlagError):
      why += " (--helpshort lists the flags)"
  if why is None and not is_expected(e):
    return
  verbose = _show_traceback() or config_errors.verbosity_in_argv(argv) >= 1
  report_and_exit(e, silence_after=True, message=why, verbose=verbose)


def run_main(main: Callable[[list[str]], Any]) -> None:
  """`absl.app.run(main)` with one-line reports of expected errors.

  Every launcher's ``__main__`` calls this: an expected error (see
  `is_expected`), in flag parsing (`parse_flags`: a config key that is no
  field, a wrong type) or in ``main``, prints ``error: <message naming the
  file or field>`` to stderr and exits with status 1, the traceback only
  with --verbosity=1 or FLIP_JAX_TRACEBACK=1. Usage errors keep absl's
  usage message; other exceptions (bugs) keep their traceback.

  JAX's compilation cache is set up before ``main`` (also for launchers
  that call no `init_runtime`) and its use logged after.
  """
  app.run(guarded(_with_compile_cache(main), silence_after=True),
          flags_parser=parse_flags)


def _with_compile_cache(main: Callable[[list[str]], Any]
                        ) -> Callable[[list[str]], Any]:
  """`main` after `setup_compile_cache`; logs the cache's use when done."""

  @functools.wraps(main)
  def wrapper(argv):
    setup_compile_cache()
    out = main(argv)
    compile_cache.log_use()
    return out

  return wrapper
