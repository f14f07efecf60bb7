"""A ``run_all`` workdir's identity: the settings its stages were trained with.

A finished stage is skipped on rerun, so a rerun with another ``--dataset``,
``--data_dir``, ``--preset``, ``--plm``, ``--ctr`` or ``--set`` would label
the old results with the new settings. Every method's ``run_all`` calls
``claim`` once its arguments are checked and before its first stage:

* a new workdir (nothing in it but this file and the data cache) gets
  ``<workdir>/run.json``, written atomically;
* a rerun is compared with ``run.json`` and refused, before anything is
  written, with one line naming the first setting that differs
  (``RunIdentityError``). The seeds may grow: each seed of a several-seed
  run trains in its own ``seed<N>/`` folder, while one seed trains in the
  workdir itself, so that seed must stay the same;
* a workdir written before ``run.json`` existed is checked on what its
  stages' ``config.json`` files record (``data.dataset``, the seed) and
  accepted with a warning about the rest; ``run.json`` is then written.
"""
from __future__ import annotations

import glob
import os
from typing import Any, Mapping

from absl import logging

from flip_jax import jsonio

RUN_FILE = "run.json"
FORMAT_VERSION = 1
# Entries of a workdir that are not a stage's output.
_NOT_OUTPUTS = (RUN_FILE, ".flip_jax_cache", ".lock")
# Flag -> run.json field, in the order differences are named.
FLAGS = (("method", "method"), ("dataset", "dataset"),
         ("data_dir", "data_dir"), ("preset", "preset"), ("plm", "plm"),
         ("ctr", "ctr"), ("set", "overrides"))


class RunIdentityError(ValueError):
  """A rerun's settings differ from those the workdir was run with."""


def _path(value: str | None) -> str | None:
  """A folder argument resolved against the current directory."""
  if not value:
    return value
  return os.path.abspath(os.path.expanduser(value))


def identity(method: str, args: Mapping[str, Any]) -> dict[str, Any]:
  """What defines a method's run among its ``run_all`` arguments.

  Args:
    method: the method's name (run_all's --method).
    args: its run_all's arguments (``dataset``, ``data_dir``, ``preset``,
      ``ctr``, ``overrides``, ``seeds``; ``plm`` when the method has one).
  """
  plm = args.get("plm")
  if plm and os.path.isdir(os.path.expanduser(plm)):
    plm = _path(plm)  # a local folder, wherever the command runs from
  seeds = [int(s) for s in args["seeds"]]
  return {"format_version": FORMAT_VERSION, "method": method,
          "dataset": args["dataset"], "data_dir": _path(args["data_dir"]),
          "preset": args["preset"], "plm": plm, "ctr": args["ctr"],
          "overrides": dict(sorted((args.get("overrides") or {}).items())),
          # One seed trains in the workdir itself; several in seed<N>/.
          "seed": seeds[0] if len(seeds) == 1 else None,
          "seeds": sorted(set(seeds)) if len(seeds) > 1 else []}


def _shown(field: str, value) -> str:
  if field == "overrides":
    return "[" + ", ".join(f"{k}={v}" for k, v in value.items()) + "]"
  return "''" if value in ("", None) else str(value)


def _same(field: str, old, new) -> bool:
  if field == "data_dir" and old and new:
    return os.path.realpath(old) == os.path.realpath(new)
  return (old or None) == (new or None)


def difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
  """The first setting that differs, as ``--flag=old, not new``; or None."""
  for flag, field in FLAGS:
    if not _same(field, old.get(field), new.get(field)):
      return (f"--{flag}={_shown(field, old.get(field))}, not "
              f"{_shown(field, new.get(field))}")
  seed, new_seed = old.get("seed"), new.get("seed")
  if seed is not None and new_seed is not None and seed != new_seed:
    return f"--seed={seed} (its stages are in the workdir itself), not " \
           f"{new_seed}"
  return None


def _holds_files(path: str) -> bool:
  """A file, or a folder with a file somewhere below (locks aside)."""
  if not os.path.isdir(path):
    return True
  return any(f != ".lock" for _, _, files in os.walk(path) for f in files)


def _outputs(workdir: str) -> list[str]:
  """The entries of ``workdir`` that a stage wrote (empty folders aside:
  a stage that failed at once leaves nothing to mislabel)."""
  if not os.path.isdir(workdir):
    return []
  return sorted(n for n in os.listdir(workdir)
                if n not in _NOT_OUTPUTS and not n.startswith(RUN_FILE)
                and _holds_files(os.path.join(workdir, n)))


def _legacy_difference(workdir: str, new: Mapping[str, Any]) -> str | None:
  """What the stages' config.json files of an older workdir contradict."""
  paths = sorted(glob.glob(os.path.join(workdir, "*", "config.json"))
                 + glob.glob(os.path.join(workdir, "seed*", "*",
                                          "config.json")))
  for path in paths:
    config = jsonio.read_json(path, expect=dict)
    dataset = (config.get("data") or {}).get("dataset")
    if dataset is not None and dataset != new["dataset"]:
      return f"--dataset={dataset}, not {new['dataset']}"
    in_root = os.path.dirname(os.path.dirname(path)) == workdir
    if (in_root and new["seed"] is not None and "seed" in config
        and config["seed"] != new["seed"]):
      return f"--seed={config['seed']}, not {new['seed']}"
  return None


def _other_layout(workdir: str, method: str) -> str | None:
  """A several-method workdir run as one method, or the other way round."""
  parent = os.path.dirname(workdir)
  if (os.path.basename(workdir) == method
      and os.path.isfile(os.path.join(parent, RUN_FILE))):
    return (f"{parent} is a run of one method, not a folder of several "
            "methods' runs; use a new --workdir")
  if os.path.isfile(os.path.join(workdir, RUN_FILE)):
    return None
  methods = sorted(n for n in _outputs(workdir)
                   if os.path.isfile(os.path.join(workdir, n, RUN_FILE)))
  if methods:
    return (f"{workdir} holds the runs of --method={','.join(methods)} in "
            "sub-folders; rerun it with that --method, or use a new "
            "--workdir")
  return None


def check(workdir: str, new: Mapping[str, Any]) -> bool:
  """Refuses a rerun that differs (module doc); whether to write run.json.

  Raises:
    RunIdentityError: naming the first setting that differs.
  """
  why = _other_layout(workdir, new["method"])
  if why:
    raise RunIdentityError(why)
  path = os.path.join(workdir, RUN_FILE)
  outputs = _outputs(workdir)
  if os.path.isfile(path):
    old = jsonio.read_json(path, expect=dict)
    diff = difference(old, new)
    if diff and outputs:
      raise RunIdentityError(f"{workdir} was run with {diff}; use a new "
                             "--workdir")
    grown = sorted(set(old.get("seeds") or []) | set(new["seeds"]))
    return bool(diff) or grown != (old.get("seeds") or []) or (
        new["seed"] is not None and old.get("seed") is None)
  if not outputs:
    return True
  diff = _legacy_difference(workdir, new)
  if diff:
    raise RunIdentityError(f"{workdir} was run with {diff}; use a new "
                           "--workdir")
  logging.warning("%s has no %s (run before it existed): only the dataset "
                  "and seed its stages recorded were checked; the preset, "
                  "PLM, backbone and --set overrides are taken to be this "
                  "run's", workdir, RUN_FILE)
  return True


def claim(workdir: str, method: str, args: Mapping[str, Any]) -> None:
  """Checks a (re)run of ``method`` in ``workdir``; records a new one.

  Args:
    workdir: the method's run_all workdir.
    method: its name.
    args: its run_all's arguments by name (``locals()`` after they are
      checked: see ``identity``).

  Raises:
    RunIdentityError: the workdir was run with other settings (one line
      naming the first difference); nothing has been written.
  """
  new = identity(method, args)
  if not check(workdir, new):
    return
  path = os.path.join(workdir, RUN_FILE)
  record = dict(new)
  if os.path.isfile(path):  # the seeds grow; the single seed is kept
    old = jsonio.read_json(path, expect=dict)
    record["seeds"] = sorted(set(old.get("seeds") or []) | set(new["seeds"]))
    record["seed"] = old.get("seed") if new["seed"] is None else new["seed"]
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:
    jsonio.write_json_atomic(path, record)
