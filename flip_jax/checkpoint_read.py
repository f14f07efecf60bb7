"""The checkpoint layout, and reads of one entry as numpy (init-from, best/).

Layout of ``{workdir}/checkpoints/{step}/``: ``state/`` (the pytree),
``data_iter/`` (the grain iterator position) and ``digest/`` (the arrays'
fingerprints, `flip_jax.checkpoint_digest`; absent in checkpoints written
before it existed, which are read unverified). `flip_jax.checkpoint` holds
the writer; this module what both sides share and the numpy reads, which
need no optimiser structure: `restore_params`, `restore_model_state`,
`restore_variables`.

A read that finds damaged files (truncated, changed bytes, a digest that
differs) raises `CheckpointDamagedError`: one line naming the step folder,
the file and what to do.
"""
from __future__ import annotations

import os
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from flip_jax import checkpoint_digest
from flip_jax import checkpoint_guard as guard

CHECKPOINT_DIR = "checkpoints"
STATE = "state"
DATA_ITER = "data_iter"
DIGEST = "digest"


def handlers(state_handler) -> dict[str, Any]:
  """The item handlers of one checkpoint step."""
  return {STATE: state_handler,
          DATA_ITER: grain.checkpoint.CheckpointHandler(),
          DIGEST: ocp.JsonCheckpointHandler()}


def has_digest(step_dir: str) -> bool:
  return os.path.isdir(os.path.join(step_dir, DIGEST))


def damaged(where: str, e: BaseException, hint: str = ""
            ) -> guard.CheckpointDamagedError:
  """`e` (from reading `where`) as one line; re-raises non-damage."""
  reason = guard.damage_reason(e)
  if reason is None:
    raise e
  return guard.CheckpointDamagedError(
      f"checkpoint {where} is damaged: {reason}{hint}")


def check_digest(restored, saved, where: str, prefix: str = "",
                 hint: str = "") -> None:
  """Raises CheckpointDamagedError where `restored` differs from `saved`."""
  bad = checkpoint_digest.mismatches(restored, saved or {}, prefix)
  if bad:
    raise guard.CheckpointDamagedError(
        f"checkpoint {where} is damaged: {', '.join(bad[:3])}"
        f"{' ...' if len(bad) > 3 else ''} read back other values than "
        f"were saved (digest mismatch: changed data files){hint}")


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


def _hint(what: str, directory: str, step: int, steps: list[int]) -> str:
  others = [s for s in steps if s != step]
  if what == "init_from":
    return ("; choose another step with --config.ckpt.init_step "
            f"(available: {others})" if others else
            "; restore it from a backup or rerun that training")
  return ("; restore the folder from a backup, or rerun the training in a "
          "new --workdir" + (f" (other steps in {directory}: {others})"
                             if others else ""))


def _restore_entry(workdir, key: str | None, *, step: int | None,
                   required: bool):
  """One top-level entry (None: all) of a checkpoint's state as numpy."""
  what = "init_from" if key else "checkpoint"  # the prefix of messages
  directory = os.path.join(os.fspath(workdir), CHECKPOINT_DIR)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"{what}: no checkpoint directory {directory}")
  mgr = ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(create=False),
      item_handlers=handlers(ocp.PyTreeCheckpointHandler()))
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
    where = os.path.join(directory, str(step))
    hint = _hint(what, directory, step, steps)
    try:
      meta = mgr.item_metadata(step)[STATE]
    except Exception as e:  # pylint: disable=broad-except
      raise damaged(where, e, hint) from e
    tree = None if meta is None else meta.tree
    if not isinstance(tree, dict) or (key is not None and key not in tree):
      if required or not isinstance(tree, dict):
        raise ValueError(f"{what}: checkpoint {where}/state has no "
                         f"{key or 'state'!r} entry")
      return {}
    meta = tree if key is None else tree[key]
    if not jax.tree.leaves(meta):
      return {}
    item = jax.tree.map(lambda m: np.empty(m.shape, m.dtype), meta)
    rargs = jax.tree.map(lambda m: ocp.RestoreArgs(restore_type=np.ndarray),
                         meta)
    if key is not None:  # partial restore of one entry
      item, rargs = {key: item}, {key: rargs}
    items = {STATE: ocp.args.PyTreeRestore(
        item=item, restore_args=rargs, partial_restore=key is not None)}
    if has_digest(where):
      items[DIGEST] = ocp.args.JsonRestore()
    try:
      out = mgr.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # pylint: disable=broad-except
      raise damaged(where, e, hint) from e
  finally:
    mgr.close()
  entry = out[STATE] if key is None else out[STATE][key]
  check_digest(entry, out.get(DIGEST), where, f"{key}/" if key else "", hint)
  logging.info("%s: loaded %s of step %d from %s", what, key or "the state",
               step, directory)
  return entry
