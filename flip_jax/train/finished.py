"""What a workdir is, before a finished run is reloaded from it.

``require(workdir)`` is called by every reload of a finished run (predict,
export, the scoring of the fusion bound) before anything is loaded. Any
other folder is refused with one line saying what it is and what to give
instead: a path that is no folder, a folder that is no run (no
``config.json``; a ``run_all`` workdir names its finished stages), a
folder with checkpoints but no ``config.json``, a pretraining run, an
unfinished run (no ``results.json``) and a run whose ``best/`` checkpoint is
gone. ``check_feature_map`` refuses data whose vocabulary is not the run's.
"""
from __future__ import annotations

import os

from flip_jax import jsonio
from flip_jax.data import features
from flip_jax.train import config_compat

GIVE = "give the folder of a finished finetuning run (config.json, " \
       "results.json, best/)"


class NotAFinishedRunError(ValueError):
  """The workdir is not a finished run of an evaluated task."""


def _steps(folder: str) -> list[int]:
  if not os.path.isdir(folder):
    return []
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit())


def _finished_stages(workdir: str) -> list[str]:
  """Sub-folders (one level, or two under seed<N>/) that are finished runs."""
  found = []
  for name in sorted(os.listdir(workdir)):
    sub = os.path.join(workdir, name)
    if all(os.path.isfile(os.path.join(sub, f))
           for f in ("config.json", "results.json")):
      found.append(name)
    elif name.startswith("seed") and os.path.isdir(sub):
      found += [f"{name}/{s}" for s in _finished_stages(sub)]
  return found


def _no_config(where: str, workdir: str) -> str:
  if _steps(os.path.join(workdir, "checkpoints")):
    return (f"{where} holds checkpoints but no config.json (deleted?), so "
            f"its model cannot be rebuilt; restore its config.json or {GIVE}")
  if os.path.isfile(os.path.join(workdir, "results.json")):
    return (f"{where} holds results but no model (no config.json, no "
            f"checkpoints: a bound computed from other runs?); {GIVE}")
  stages = _finished_stages(workdir)
  if stages:
    shown = ", ".join(os.path.join(workdir, s) for s in stages[:3])
    more = f" (and {len(stages) - 3} more)" if len(stages) > 3 else ""
    return (f"{where} is a folder of runs, not a run (no config.json); "
            f"give one of its finished runs: {shown}{more}")
  return f"{where} is not a run folder (no config.json); {GIVE}"


def describe(workdir: str, flag: str | None = "--workdir") -> str | None:
  """Why ``workdir`` is not a finished finetuning run; None if it is one."""
  where = f"{flag} {workdir}" if flag else str(workdir)
  if not os.path.exists(workdir):
    return f"{where} does not exist; {GIVE}"
  if not os.path.isdir(workdir):
    return f"{where} is a file, not a finetuning run folder"
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    return _no_config(where, workdir)
  try:
    task = config_compat.infer_task(jsonio.read_json(path, expect=dict))
  except jsonio.JSONFileError:
    raise  # names the file
  except ValueError as e:
    return f"{where} is not a run folder ({e}); {GIVE}"
  ckpts = _steps(os.path.join(workdir, "checkpoints"))
  if task.endswith("_pretrain"):
    return (f"{where} is a pretraining run (task {task}): it has no CTR "
            "model to score or export; give a finetuning run initialised "
            f"from it (ckpt.init_from={workdir})")
  if not os.path.isfile(os.path.join(workdir, "results.json")):
    at = f"checkpoints up to step {ckpts[-1]}" if ckpts else "no checkpoint"
    return (f"{where} is an unfinished {task} run (no results.json; {at}); "
            f"rerun its training to finish it, or {GIVE}")
  if not _steps(os.path.join(workdir, "best", "checkpoints")):
    return (f"{where} is a finished {task} run without its best/ checkpoint "
            "(removed?), so there is nothing to load; retrain it in a new "
            f"--workdir, or {GIVE}")
  return None


def require(workdir: str, flag: str | None = "--workdir") -> dict:
  """The run's config (upgraded); refuses any other folder in one line.

  Raises:
    NotAFinishedRunError: saying what ``workdir`` is and what to give.
  """
  why = describe(os.fspath(workdir), flag)
  if why:
    raise NotAFinishedRunError(why)
  return config_compat.upgrade(jsonio.read_json(
      os.path.join(workdir, "config.json"), expect=dict))


def check_feature_map(workdir: str, feature_map: features.FeatureMap, *,
                      advice: str = "give the --dataset / --data_dir the run "
                      "was trained on") -> None:
  """The data's feature map must be the run's ``feature_map.json``, id for id.

  Raises:
    ValueError: naming the file, the first field whose vocabulary differs
      and ``advice``.
  """
  path = os.path.join(workdir, "feature_map.json")
  diff = features.first_difference(features.FeatureMap.load(path),
                                   feature_map)
  if diff:
    raise ValueError(
        f"the data does not match {path} ({diff}): its ids would map to "
        f"other embeddings; {advice}")
