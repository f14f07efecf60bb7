"""Orbax checkpoints and params-only init-from.

Layout (STYLE.md 5): ``{workdir}/checkpoints/{step}/state/`` (the whole
`TrainState` pytree) and ``{workdir}/checkpoints/{step}/data_iter/`` (the
grain iterator position, one JSON file per process), written by ONE orbax
`CheckpointManager`. Per run, ``config.json``, ``feature_map.json`` and
``results.json`` are written with `flip_jax.jsonio.write_json_atomic`.

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
directories are removed when the next `Checkpointer` opens the workdir. A
checkpoint that is damaged anyway (truncated files, NaN params) is set
aside on resume and the previous one used (`restore_latest_good`).
"""
from __future__ import annotations

import os
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from flip_jax.tree_paths import path_str

CHECKPOINT_DIR = "checkpoints"
STATE = "state"
DATA_ITER = "data_iter"


DAMAGED_DIR = "damaged_checkpoints"


class CheckpointError(RuntimeError):
  """A checkpoint could not be saved, or no saved one can be restored."""


def _handlers(state_handler) -> dict[str, Any]:
  return {STATE: state_handler,
          DATA_ITER: grain.checkpoint.CheckpointHandler()}


class Checkpointer:
  """One orbax CheckpointManager for ``{workdir}/checkpoints``.

  Args:
    workdir: run directory.
    max_to_keep: newest checkpoints kept (None = all).
    save_interval_steps: `save` without force only writes when step is a
      multiple of this.
    async_save: write in a background thread (call `wait_until_finished`
      before reading the files or exiting; `close` does it).
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
        item_handlers=_handlers(ocp.StandardCheckpointHandler()))

  def save(self, step: int, state, data_iter=None, *,
           force: bool = False) -> bool:
    """Saves `state` (and the iterator position) as `step`.

    Args:
      step: the step number (normally ``int(state.step)``).
      state: the TrainState (or any pytree of arrays).
      data_iter: a grain ``DatasetIterator``/``DataLoaderIterator`` or None.
      force: save even if `step` is off the save interval.

    Returns:
      True if a save was started; False off the interval, or if `step` is
      already saved (e.g. re-saving the step just restored).
    """
    if int(step) in self._mgr.all_steps():
      logging.warning("checkpoint: step %d already saved in %s; not "
                      "overwriting", step, self.directory)
      return False
    items = {STATE: ocp.args.StandardSave(state)}
    if data_iter is not None:
      items[DATA_ITER] = grain.checkpoint.CheckpointSave(data_iter)
    self._probe_writable(step)
    try:
      saved = self._mgr.save(int(step), args=ocp.args.Composite(**items),
                             force=force)
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f"saving checkpoint step {step} to "
                            f"{self.directory} failed: {e}") from e
    if saved:
      logging.info("checkpoint: saving step %d to %s", step, self.directory)
    return saved

  def _probe_writable(self, step) -> None:
    """Fails fast (one message, path and OS error) where a save cannot
    write: a read-only or full filesystem would otherwise surface late,
    buried in the async writer's tracebacks."""
    probe = os.path.join(self.directory, f".write_probe.{os.getpid()}")
    try:
      with open(probe, "wb") as f:
        f.write(b"0" * 4096)
        f.flush()
        os.fsync(f.fileno())
      os.remove(probe)
    except OSError as e:
      raise CheckpointError(
          f"cannot save checkpoint step {step}: {self.directory} is not "
          f"writable ({e.strerror or e}); the last saved step "
          f"{self.latest_step()} is intact") from e

  def latest_step(self) -> int | None:
    """The newest complete checkpoint step, or None."""
    return self._mgr.latest_step()

  def all_steps(self) -> list[int]:
    """All complete checkpoint steps, ascending."""
    return sorted(self._mgr.all_steps())

  def restore(self, step: int, abstract_state, data_iter=None):
    """Restores `step` onto the shardings of `abstract_state`.

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
    """
    steps = self.all_steps()
    if step not in steps:
      raise FileNotFoundError(f"checkpoint step {step} not in "
                              f"{self.directory}; available: {steps}")
    _check_shardings(abstract_state)
    meta = self._mgr.item_metadata(int(step))[STATE]
    _check_saved_shapes(getattr(meta, "tree", meta), abstract_state,
                        f"{self.directory}/{step}")
    items = {STATE: ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      if not os.path.isdir(os.path.join(self.directory, str(step),
                                        DATA_ITER)):
        raise FileNotFoundError(f"checkpoint step {step} in {self.directory} "
                                "has no data_iter item to restore")
      items[DATA_ITER] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self._mgr.restore(int(step), args=ocp.args.Composite(**items))
    logging.info("checkpoint: restored step %d from %s", step, self.directory)
    return restored[STATE]

  def restore_latest_good(self, abstract_state, data_iter=None):
    """Restores the newest checkpoint that is intact; (state, step).

    A checkpoint that fails to restore (truncated or missing files) or
    restores with non-finite params is damaged: it is moved, whole, to
    ``<workdir>/damaged_checkpoints/<step>`` (never deleted), a warning names
    it and the reason, and the previous one is tried. Raises CheckpointError
    when none is usable.
    """
    damaged = []
    for step in reversed(self.all_steps()):
      try:
        state = self.restore(step, abstract_state, data_iter=data_iter)
        bad = non_finite_leaves(getattr(state, "params", state))
        if bad:
          raise CheckpointError(f"non-finite values in {', '.join(bad[:5])}")
        if damaged:
          logging.warning("checkpoint: resumed from step %d; damaged "
                          "checkpoints moved to %s: %s", step,
                          self._damaged_dir(), "; ".join(damaged))
        return state, step
      except (CheckpointError, ValueError, OSError, KeyError) as e:
        if isinstance(e, ValueError) and "shape" in str(e):
          raise  # another model's checkpoint: not damage
        reason = str(e).splitlines()[0][:300]
        logging.warning("checkpoint %s/%d is damaged (%s); trying the "
                        "previous one", self.directory, step, reason)
        self._set_aside(step)
        damaged.append(f"step {step}: {reason}")
    raise CheckpointError(
        f"no usable checkpoint in {self.directory}"
        + (f"; damaged ones were moved to {self._damaged_dir()}: "
           + "; ".join(damaged) if damaged else ""))

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
    """Blocks until a pending async save is committed."""
    try:
      self._mgr.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f"saving a checkpoint to {self.directory} "
                            f"failed: {e}") from e

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self._mgr.wait_until_finished()
    self._mgr.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def non_finite_leaves(tree) -> list[str]:
  """Paths of the floating-point leaves holding NaN or Inf."""
  out = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if jax.numpy.issubdtype(leaf.dtype, jax.numpy.floating) and not bool(
        jax.numpy.isfinite(leaf).all()):
      out.append(path_str(path))
  return out


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
      raise ValueError(f"checkpoint {where}: {name!r} was saved with shape "
                       f"{tuple(got)}, this run expects {want}{hint}")


def restore_params(init_from_workdir: str | os.PathLike, *,
                   step: int | None = None) -> dict:
  """Loads only the ``params`` subtree of a run's checkpoint, as numpy.

  The optimiser structure of that run is not needed: only the params are
  read (partial restore against the saved metadata).

  Args:
    init_from_workdir: the (pretraining) run directory.
    step: the step to load; None = the latest complete one.

  Returns:
    Nested dict of numpy arrays.
  """
  return _restore_entry(init_from_workdir, "params", step=step, required=True)


def restore_model_state(init_from_workdir: str | os.PathLike, *,
                        step: int | None = None) -> dict:
  """Loads the ``model_state`` subtree (e.g. BatchNorm statistics), as numpy.

  Same rules as `restore_params`; ``{}`` where the run keeps none (or the
  checkpoint predates the field, or holds params only).
  """
  return _restore_entry(init_from_workdir, "model_state", step=step,
                        required=False)


def restore_variables(workdir: str | os.PathLike, *,
                      step: int | None = None) -> dict:
  """Loads a checkpoint that holds a variables dict (``{'params': ...,
  'batch_stats': ...}``, as finetuning's ``best/`` does), as numpy."""
  return _restore_entry(workdir, None, step=step, required=True)


def _restore_entry(workdir, key: str | None, *, step: int | None,
                   required: bool):
  """One top-level entry (None: all) of a checkpoint's state as numpy."""
  what = "init_from" if key else "checkpoint"  # the prefix of messages
  directory = os.path.join(os.fspath(workdir), CHECKPOINT_DIR)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"{what}: no checkpoint directory {directory}")
  mgr = ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(create=False),
      item_handlers=_handlers(ocp.PyTreeCheckpointHandler()))
  try:
    steps = sorted(mgr.all_steps())
    if not steps:
      raise FileNotFoundError(f"{what}: no complete checkpoint in "
                              f"{directory}")
    if step is None:
      step = steps[-1]
    elif step not in steps:
      raise FileNotFoundError(f"{what}: step {step} not in {directory}; "
                              f"available: {steps}")
    meta = mgr.item_metadata(step)[STATE]
    tree = None if meta is None else meta.tree
    if not isinstance(tree, dict) or (key is not None and key not in tree):
      if required or not isinstance(tree, dict):
        raise ValueError(f"{what}: checkpoint {directory}/{step}/state has "
                         f"no {key or 'state'!r} entry")
      return {}
    meta = tree if key is None else tree[key]
    if not jax.tree.leaves(meta):
      return {}
    item = jax.tree.map(lambda m: np.empty(m.shape, m.dtype), meta)
    rargs = jax.tree.map(lambda m: ocp.RestoreArgs(restore_type=np.ndarray),
                         meta)
    if key is not None:  # partial restore of one entry
      item, rargs = {key: item}, {key: rargs}
    out = mgr.restore(step, args=ocp.args.Composite(**{
        STATE: ocp.args.PyTreeRestore(item=item, restore_args=rargs,
                                      partial_restore=key is not None)}))
  finally:
    mgr.close()
  logging.info("%s: loaded %s of step %d from %s", what, key or "the state",
               step, directory)
  return out[STATE] if key is None else out[STATE][key]


def init_rule(checkpointer: Checkpointer, init_from: str | None) -> str:
  """Which init rule fires: 'resume', 'init_from' or 'scratch' (see top)."""
  if checkpointer.latest_step() is not None:
    return "resume"
  if init_from:
    return "init_from"
  return "scratch"
