"""A run's resolved architecture, stored in the run itself (``model.json``).

A finetuning run initialised from another run (``ckpt.init_from``,
``srp4ctr.pretrained``) takes its architecture (backbone, PLM, prompts,
sequence encoder ...) from that run's ``config.json`` when it starts. That
run may later be replaced, moved or named by a relative path, so a reload
must not read it again:

* ``pin(workdir, sections)``: when a run starts, its task stores the config
  sections it resolved (e.g. ``{'model': ...}``) in ``<workdir>/model.json``
  (atomically); on resume the freshly resolved sections must equal the
  stored ones (``ArchitectureChangedError`` names the first field that
  differs), so a resumed run never continues another architecture.
* ``load(workdir)``: the stored sections, for every reload (predict,
  export); ``None`` for a run written before ``model.json`` existed (the
  caller falls back to resolving, with a warning).
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

from absl import logging

from flip_jax import jsonio
from flip_jax.train import workdir as workdir_lib

MODEL_FILE = "model.json"
FORMAT_VERSION = 1


class ArchitectureChangedError(ValueError):
  """A resumed run would build another architecture than it started with."""


def _plain(section) -> Any:
  """A JSON round trip of a config section (ConfigDict or dict)."""
  if hasattr(section, "to_json_best_effort"):
    return json.loads(section.to_json_best_effort())
  return json.loads(json.dumps(section))


def _first_difference(old: Any, new: Any, prefix: str) -> str | None:
  """The first dotted field where two JSON trees differ, with both values."""
  if isinstance(old, dict) and isinstance(new, dict):
    for key in sorted(set(old) | set(new)):
      found = _first_difference(old.get(key), new.get(key),
                                f"{prefix}.{key}" if prefix else key)
      if found:
        return found
    return None
  return None if old == new else f"{prefix}: {old!r} -> {new!r}"


def pin(workdir: str, sections: Mapping[str, Any], source: str = "") -> None:
  """Stores the resolved sections at a run's start; checks them on resume.

  Args:
    workdir: the run's folder.
    sections: config section name -> resolved section (the architecture
      the run trains).
    source: where they were resolved from (a run's folder), for messages.

  Raises:
    ArchitectureChangedError: a resumed run's sections differ from those
      it started with (e.g. its ``ckpt.init_from`` run was replaced).
  """
  path = os.path.join(workdir, MODEL_FILE)
  new = {name: _plain(s) for name, s in sections.items()}
  resumed = workdir_lib.has_run_state(workdir)
  if resumed and os.path.exists(path):
    old = jsonio.read_json(path, expect=dict).get("sections", {})
    diff = _first_difference(old, new, "")
    if diff:
      origin = f" (resolved from {source})" if source else ""
      raise ArchitectureChangedError(
          f"{workdir} was started with another architecture than it would "
          f"resume with{origin}: {diff}; restore the run it was initialised "
          "from, or use a new --workdir")
    return
  if resumed:
    logging.warning("%s: a run from before %s; its architecture is not "
                    "recorded (resolved again at each reload)", workdir,
                    MODEL_FILE)
    return
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:
    jsonio.write_json_atomic(path, {"format_version": FORMAT_VERSION,
                                    "source": source, "sections": new})


def load(workdir: str) -> dict[str, Any] | None:
  """The sections a run was trained with; None (warned) for an older run."""
  path = os.path.join(workdir, MODEL_FILE)
  if not os.path.exists(path):
    logging.warning("%s has no %s (a run from before it existed): its "
                    "architecture is resolved from its config and the run "
                    "it was initialised from, as they are now", workdir,
                    MODEL_FILE)
    return None
  data = jsonio.read_json(path, expect=dict)
  if data.get("format_version") != FORMAT_VERSION or not isinstance(
      data.get("sections"), dict):
    raise ValueError(f"{path}: not a model record (format_version "
                     f"{data.get('format_version')!r}, expected "
                     f"{FORMAT_VERSION} with 'sections')")
  return data["sections"]
