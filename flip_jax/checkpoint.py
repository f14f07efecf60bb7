"""Orbax checkpoints and params-only init-from.

Layout (STYLE.md 5): ``{workdir}/checkpoints/{step}/state/`` (the whole
`TrainState` pytree), ``{workdir}/checkpoints/{step}/data_iter/`` (the
grain iterator position, one JSON file per process) and
``{workdir}/checkpoints/{step}/digest/`` (the arrays' fingerprints), written
by ONE orbax `CheckpointManager`. Per run, ``config.json``,
``feature_map.json`` and ``results.json`` are written with
`flip_jax.jsonio.write_json_atomic`.

Init priority (which rule fires is logged by the trainer):

  1. The latest complete checkpoint in ``{workdir}``: full state (params,
     optimiser state, step, RNG) and the data-iterator position. This is a
     resume; rule 2 is never applied on a resume.
  2. Else ``ckpt.init_from``: a pretraining workdir (optionally a step, else
     its latest). Params (`restore_params`) and BatchNorm statistics
     (`restore_model_state`) only, merged into freshly initialised ones
     with the keep/drop regexes (`flip_jax.init_merge.merge_init`); the
     optimiser, step and data order start fresh. First start only.
  3. Else initialise everything from scratch.

Atomicity: orbax writes each step into a temporary directory and renames it
once every item is complete, so a crash or SIGKILL mid-save leaves the
previous step as the latest visible checkpoint. Leftover temporary
directories are removed when the next `Checkpointer` opens the workdir.

Damage: every restore is verified (`flip_jax.checkpoint_digest`); files
that do not read back as written (truncated, changed bytes) or NaN params
raise `CheckpointDamagedError`, one line naming the file. On resume such a
checkpoint is set aside and the previous one used (`restore_latest_good`);
when none is left, a rerun is refused rather than started from scratch.

Replicated arrays on CPU (`flip_jax.checkpoint_arrays`): orbax's
replica-parallel writing is turned off on a CPU backend.

Failures (`flip_jax.checkpoint_guard`): a save into a read-only or full
folder is refused up front; one that fails while writing ends the run with
one line; both say which step is kept. Ctrl-C during a save stops the run
once the save is complete.
"""
from __future__ import annotations

import gc
import os

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from flip_jax import checkpoint_arrays
from flip_jax import checkpoint_digest
from flip_jax import checkpoint_guard as guard
from flip_jax import checkpoint_read as read
from flip_jax.tree_paths import path_str

# pylint: disable=unused-import
from flip_jax.checkpoint_guard import CheckpointDamagedError
from flip_jax.checkpoint_guard import CheckpointError
from flip_jax.checkpoint_guard import CheckpointMismatchError
from flip_jax.checkpoint_read import CHECKPOINT_DIR
from flip_jax.checkpoint_read import DATA_ITER
from flip_jax.checkpoint_read import DIGEST
from flip_jax.checkpoint_read import STATE
from flip_jax.checkpoint_read import restore_model_state
from flip_jax.checkpoint_read import restore_params
from flip_jax.checkpoint_read import restore_variables
# pylint: enable=unused-import

DAMAGED_DIR = "damaged_checkpoints"

guard.quiet_orbax_failures()


class Checkpointer:
  """One orbax CheckpointManager for ``{workdir}/checkpoints``.

  Args:
    workdir: run directory.
    max_to_keep: newest checkpoints kept (None = all).
    save_interval_steps: `save` without force only writes when step is a
      multiple of this.
    async_save: write in a background thread (call `wait_until_finished`
      before reading the files or exiting; `close` does it; a run that
      stops on an exception still completes it at interpreter exit).
  """

  def __init__(self, workdir: str | os.PathLike, *, max_to_keep: int | None,
               save_interval_steps: int, async_save: bool = True):
    if save_interval_steps < 1:
      raise ValueError(f"save_interval_steps must be >= 1, got "
                       f"{save_interval_steps}")
    if max_to_keep is not None and max_to_keep < 1:
      raise ValueError(f"max_to_keep must be None or >= 1, got {max_to_keep}")
    # Absolute: orbax refuses relative paths in some of its writers.
    self.directory = os.path.join(os.path.abspath(os.fspath(workdir)),
                                  CHECKPOINT_DIR)
    checkpoint_arrays.write_replicas_whole_on_cpu()
    # Exactly every `save_interval_steps` (plus preemption signals); orbax's
    # default would also save whatever step comes first.
    policy = ocp.checkpoint_managers.AnySavePolicy([
        ocp.checkpoint_managers.FixedIntervalPolicy(save_interval_steps),
        ocp.checkpoint_managers.PreemptionCheckpointingPolicy()])
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, save_decision_policy=policy,
        enable_async_checkpointing=async_save,
        # A save killed mid-way leaves `{step}.orbax-checkpoint-tmp*`.
        cleanup_tmp_directories=True, create=True)
    self._mgr = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers=read.handlers(ocp.StandardCheckpointHandler()))
    self._failed: CheckpointError | None = None
    self._pending = None  # the step of the last save started
    guard.finish_at_exit(self)

  def save(self, step: int, state, data_iter=None, *,
           force: bool = False) -> bool:
    """Saves `state` (and the iterator position) as `step`.

    Ctrl-C meanwhile raises KeyboardInterrupt once the step is complete.

    Args:
      step: the step number (normally ``int(state.step)``).
      state: the TrainState (or any pytree of arrays).
      data_iter: a grain ``DatasetIterator``/``DataLoaderIterator`` or None.
      force: save even if `step` is off the save interval.

    Returns:
      True if a save was started; False off the interval, or if `step` is
      already saved (e.g. re-saving the step just restored).

    Raises:
      CheckpointError: the folder is read-only or full (nothing written), or
        writing failed; the message says which step is kept.
    """
    with guard.sigint_deferred(f"saving checkpoint step {step}") as ctrl_c:
      self.wait_until_finished()  # an earlier async save's failure
      if not force and not self._mgr.should_save(int(step)):
        return False
      if int(step) in self._mgr.all_steps():
        logging.warning("checkpoint: step %d already saved in %s; not "
                        "overwriting", step, self.directory)
        return False
      guard.check_storage(self.directory, step)
      items = {STATE: ocp.args.StandardSave(state),
               DIGEST: ocp.args.JsonSave(checkpoint_digest.digest(state))}
      if data_iter is not None:
        items[DATA_ITER] = grain.checkpoint.CheckpointSave(data_iter)
      self._pending = int(step)
      try:
        saved = self._mgr.save(int(step), args=ocp.args.Composite(**items),
                               force=True)
      except Exception as e:  # pylint: disable=broad-except
        raise self._fail(e) from e
      if saved:
        logging.info("checkpoint: saving step %d to %s", step,
                     self.directory)
      if ctrl_c.received:  # stop only with the whole step on disk
        self.wait_until_finished()
    return saved

  def _fail(self, e: BaseException) -> CheckpointError:
    """The one-line error of a failed write; the manager is released now
    (its threads and the failed write's tasks), not in interpreter
    teardown, where they print tracebacks."""
    self._failed = guard.save_failed(self.directory, self._pending, e)
    guard.forget_at_exit(self)
    try:
      self._mgr.close()
    except Exception:  # pylint: disable=broad-except
      pass  # the same failure, already reported
    gc.collect()
    guard.remove_partial(self.directory, self._pending)
    return self._failed

  def _check_usable(self) -> None:
    if self._failed is not None:
      raise CheckpointError(str(self._failed))

  def latest_step(self) -> int | None:
    """The newest complete checkpoint step, or None for a new run.

    Raises:
      CheckpointDamagedError: the run has checkpoints, but every one was
        set aside as damaged: starting afresh would overwrite its metrics.
    """
    latest = self._mgr.latest_step()
    if latest is None and self._damaged_steps():
      raise CheckpointDamagedError(self._none_left_message())
    return latest

  def all_steps(self) -> list[int]:
    """All complete checkpoint steps, ascending."""
    return sorted(self._mgr.all_steps())

  def restore(self, step: int, abstract_state, data_iter=None):
    """Restores `step` onto the shardings of `abstract_state`, verified.

    Args:
      step: a step from `all_steps`.
      abstract_state: pytree of ``jax.ShapeDtypeStruct`` carrying the
        CURRENT shardings (e.g. `abstract_like(state)`, or `jax.eval_shape`
        output with shardings attached); the saved device layout is
        ignored, so restoring onto a different mesh works.
      data_iter: a fresh iterator of the same pipeline; its position is set
        in place to the saved one.

    Returns:
      The restored state, with the structure of `abstract_state`.

    Raises:
      CheckpointDamagedError: files that do not read back as written.
      CheckpointMismatchError: a leaf saved with another shape.
    """
    steps = self.all_steps()
    if step not in steps:
      raise FileNotFoundError(f"checkpoint step {step} not in "
                              f"{self.directory}; available: {steps}")
    _check_shardings(abstract_state)
    where = os.path.join(self.directory, str(step))
    try:
      meta = self._mgr.item_metadata(int(step))[STATE]
    except Exception as e:  # pylint: disable=broad-except
      raise read.damaged(where, e) from e
    _check_saved_shapes(getattr(meta, "tree", meta), abstract_state, where)
    items = {STATE: ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      if not os.path.isdir(os.path.join(where, DATA_ITER)):
        raise FileNotFoundError(f"checkpoint step {step} in {self.directory} "
                                "has no data_iter item to restore")
      items[DATA_ITER] = grain.checkpoint.CheckpointRestore(data_iter)
    if read.has_digest(where):
      items[DIGEST] = ocp.args.JsonRestore()
    try:
      restored = self._mgr.restore(int(step),
                                   args=ocp.args.Composite(**items))
    except Exception as e:  # pylint: disable=broad-except
      raise read.damaged(where, e) from e
    read.check_digest(restored[STATE], restored.get(DIGEST), where)
    logging.info("checkpoint: restored step %d from %s", step, self.directory)
    return restored[STATE]

  def restore_latest_good(self, abstract_state, data_iter=None):
    """Restores the newest checkpoint that is intact; (state, step).

    A damaged checkpoint (`restore` raises CheckpointDamagedError, its
    data_iter item is missing, or its params are not finite) is moved,
    whole, to ``<workdir>/damaged_checkpoints/<step>`` (never deleted), a
    warning names it and the reason, and the previous one is tried.

    Raises:
      CheckpointDamagedError: none is intact (every one was set aside); it
        says what to do, and later reruns say the same (`latest_step`).
    """
    damaged = []
    for step in reversed(self.all_steps()):
      try:
        state = self.restore(step, abstract_state, data_iter=data_iter)
        bad = non_finite_leaves(getattr(state, "params", state))
        if bad:
          raise CheckpointDamagedError(
              f"non-finite values in {', '.join(bad[:5])}")
      except (CheckpointDamagedError, FileNotFoundError) as e:
        reason = str(e).splitlines()[0].split(" is damaged: ", 1)[-1][:300]
        logging.warning("checkpoint %s/%d is damaged (%s); trying the "
                        "previous one", self.directory, step, reason)
        self._set_aside(step)
        damaged.append(f"step {step}: {reason}")
        continue
      if damaged:
        logging.warning("checkpoint: resumed from step %d; damaged "
                        "checkpoints moved to %s: %s", step,
                        self._damaged_dir(), "; ".join(damaged))
      return state, step
    raise CheckpointDamagedError(self._none_left_message(damaged))

  def _none_left_message(self, damaged: list[str] | None = None) -> str:
    names = self._damaged_steps()
    why = f" ({damaged[0]})" if damaged else ""
    return (f"no usable checkpoint in {self.directory}: every one is "
            f"damaged{why} and was moved to {self._damaged_dir()} (steps "
            f"{', '.join(names[:8])}); not starting from scratch over this "
            "run's results: restore the checkpoints from a backup, or delete "
            f"{self._damaged_dir()} (or use a new --workdir) to train again "
            "from the start")

  def _damaged_steps(self) -> list[str]:
    try:
      return sorted(os.listdir(self._damaged_dir()))
    except OSError:
      return []

  def _damaged_dir(self) -> str:
    return os.path.join(os.path.dirname(self.directory), DAMAGED_DIR)

  def _set_aside(self, step: int) -> None:
    os.makedirs(self._damaged_dir(), exist_ok=True)
    dest = os.path.join(self._damaged_dir(), str(step))
    n = 1
    while os.path.exists(dest):
      dest = os.path.join(self._damaged_dir(), f"{step}.{n}")
      n += 1
    os.replace(os.path.join(self.directory, str(step)), dest)
    self._mgr.reload()

  def wait_until_finished(self) -> None:
    """Blocks until a pending async save is committed (Ctrl-C meanwhile
    raises KeyboardInterrupt once it is).

    Raises:
      CheckpointError: that save failed; it says which step is kept.
    """
    self._check_usable()
    with guard.sigint_deferred("writing a checkpoint"):
      try:
        self._mgr.wait_until_finished()
      except Exception as e:  # pylint: disable=broad-except
        raise self._fail(e) from e

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    if self._failed is not None:
      return  # released when the save failed
    self.wait_until_finished()
    guard.forget_at_exit(self)
    self._mgr.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def non_finite_leaves(tree) -> list[str]:
  """Paths of the floating-point leaves holding NaN or Inf (whole CPU
  arrays checked by numpy, others by one jitted check per leaf shape)."""
  out = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if not jax.numpy.issubdtype(leaf.dtype, jax.numpy.floating):
      continue
    if isinstance(leaf, jax.Array) and not checkpoint_digest.on_host(leaf):
      finite = bool(_all_finite(leaf))
    else:
      finite = bool(np.isfinite(np.asarray(leaf)).all())
    if not finite:
      out.append(path_str(path))
  return out


_all_finite = jax.jit(lambda x: jax.numpy.isfinite(x).all())


def abstract_like(tree):
  """Concrete arrays -> ShapeDtypeStructs keeping their shardings."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _check_shardings(abstract_state) -> None:
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]:
    if isinstance(leaf, jax.ShapeDtypeStruct) and leaf.sharding is None:
      raise ValueError(
          f"restore: abstract leaf {path_str(path)!r} has no sharding; "
          "attach the current shardings (restoring without them silently "
          "uses the saved layout)")


def _check_saved_shapes(saved_tree, abstract_state, where: str) -> None:
  """Names the first leaf whose saved shape differs from this run's.

  Orbax would fail deep in TensorStore; the usual causes are a changed
  architecture or data config, or another ``prng_impl`` (its key data is
  part of the state).
  """
  if saved_tree is None:
    return
  saved = {path_str(p): getattr(leaf, "shape", None) for p, leaf in
           jax.tree_util.tree_flatten_with_path(saved_tree)[0]}
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]:
    name = path_str(path)
    got = saved.get(name)
    want = tuple(getattr(leaf, "shape", ()))
    if got is not None and tuple(got) != want:
      hint = (" (the run's PRNG key data: it was started with another "
              "config.prng_impl)" if name == "rng" else
              " (the model or data config differs from the run that wrote it)")
      raise CheckpointMismatchError(
          f"checkpoint {where}: {name!r} was saved with shape "
          f"{tuple(got)}, this run expects {want}{hint}")


def init_rule(checkpointer: Checkpointer, init_from: str | None) -> str:
  """Which init rule fires: 'resume', 'init_from' or 'scratch' (see top)."""
  if checkpointer.latest_step() is not None:
    return "resume"
  if init_from:
    return "init_from"
  return "scratch"
