"""Config mistakes of the command line as one line naming the key.

An override (``--config.<key>=<value>`` of the launchers, ``--set=<key>=
<value>`` of run_all) that names no field of the config, or gives a value of
the wrong type, is refused with a message that names the key and, when
known, today's name of a key renamed by a redesign (the table is
`flip_jax.train.config_compat.RENAMED`) or ml_collections' suggestion for a
misspelt one:

  --config.total_steps: renamed to train.max_steps (--config.train.max_steps)
  --config.data.mlm_mask_ratio: no field 'mlm_mask_ratio' in data; did you
    mean data.ctr_mask_ratio?
"""
from __future__ import annotations

import re
from typing import Sequence

from absl import flags
import ml_collections as mlc
from ml_collections.config_flags import config_flags

from flip_jax.train import config_compat


class ConfigKeyError(ValueError):
  """An override names no field of the config, or has the wrong type."""


_DID_YOU_MEAN = re.compile(r'Did you mean "([^"]+)" instead of')


def _suggestion(section, name: str) -> str | None:
  """ml_collections' "did you mean" for field `name` of `section`."""
  if not isinstance(section, mlc.ConfigDict):
    return None
  try:
    section[name]  # pylint: disable=pointless-statement
  except KeyError as e:
    match = _DID_YOU_MEAN.search(str(e.args[0]) if e.args else "")
    return match.group(1) if match else None
  return None


def unknown_key(config, key: str, prefix: str = "") -> str | None:
  """Why dotted `key` names no field of `config`; None when it names one.

  Args:
    config: a ConfigDict (or dict).
    key: dotted field name, e.g. 'data.max_length'.
    prefix: how the user spells a key on this command line ('--config.'
      or ''), for the new name of a renamed key.

  Returns:
    'renamed to <new> (<prefix><new>)' for a key of an older layout, else
    "no field 'x' in <section>[; did you mean <section>.y?]", or None.
  """
  parts = key.split(".")
  node = config
  for i, part in enumerate(parts):
    where = ".".join(parts[:i])
    if not isinstance(node, (mlc.ConfigDict, dict)):
      return f"{where} is a value ({node!r}), not a section with fields"
    if part in node:
      node = node[part]
      continue
    new = config_compat.renamed_to(key)
    if new is not None:
      return f"renamed to {new}" + (f" ({prefix}{new})" if prefix else "")
    if key in config_compat.REMOVED:
      return f"removed: {config_compat.REMOVED[key]}"
    msg = f"no field {part!r} in {where or 'the config'}"
    hint = _suggestion(node, part)
    if hint is not None:
      msg += f"; did you mean {'.'.join(parts[:i] + [hint])}?"
    return msg
  return None


def field_type(config, key: str) -> type | None:
  """The type a type-safe ConfigDict field `key` accepts (None: unknown)."""
  *parents, leaf = key.split(".")
  section = config
  try:
    for p in parents:
      section = section[p]
    want = section.get_type(leaf)
  except (AttributeError, KeyError, TypeError):
    return None
  return want if isinstance(want, type) and want is not type(None) else None


def type_message(spelt: str, text: str, want: type,
                 detail: str | None = None) -> str:
  """'<spelt>=<text>: expected an int value, not 'abc' (<detail>)'."""
  name = want.__name__
  msg = (f"{spelt}={text}: expected {'an' if name[0] in 'aeiou' else 'a'} "
         f"{name} value, not {text!r}")
  return f"{msg} ({detail})" if detail else msg


# ------------------------------------------------------------ flag parsing
def _flag_value(argv: Sequence[str], name: str) -> str | None:
  """The value of --name=V / --name V in argv (the last one), else None."""
  value = None
  for i, arg in enumerate(argv):
    if arg in (f"--{name}", f"-{name}") and i + 1 < len(argv):
      value = argv[i + 1]
    elif arg.startswith((f"--{name}=", f"-{name}=")):
      value = arg.split("=", 1)[1]
  return value


def verbosity_in_argv(argv: Sequence[str]) -> int:
  """--verbosity / -v of argv (parsing may stop before it is read)."""
  for name in ("verbosity", "v"):
    value = _flag_value(argv, name)
    if value is not None:
      try:
        return int(value)
      except ValueError:
        return 0
  return 0


def _overrides(argv: Sequence[str], name: str) -> list[str]:
  """The dotted keys of --name.<key>[=value] in argv, in order."""
  keys = []
  for arg in argv:
    for dashes in ("--", "-"):
      head = f"{dashes}{name}."
      if arg.startswith(head):
        keys.append(arg[len(head):].split("=", 1)[0])
        break
  return keys


_BAD_VALUE = re.compile(r"flag --([\w.]+)=(.*?): (.*)$", re.S)


def _config_sources(argv: Sequence[str], flag_values,
                    defaults) -> dict[str, str]:
  """Config-file flag name -> the file (with :variant) the run loads."""
  names = {n: flag_values[n] for n in list(flag_values)
           if config_flags.is_config_flag(flag_values[n])}
  sources = {}
  for name in set(names) | set(defaults or {}):
    source = _flag_value(argv, name)
    if source is None and name in names:
      source = names[name].default_unparsed
    if source is None:
      source = (defaults or {}).get(name)
    if isinstance(source, str):
      sources[name] = source
  return sources


def flag_error(argv: Sequence[str], error: Exception,
               flag_values=flags.FLAGS,
               defaults: dict[str, str] | None = None) -> str | None:
  """The message of a config override of argv that made parsing fail.

  Loads each config-file flag's config again (the file alone, without the
  overrides) and checks every --<flag>.<key> of argv against it: the
  first key naming no field (`unknown_key`), else the key whose value absl
  refused (`error`), with the type the field takes.

  Args:
    argv: the command line.
    error: what parsing (or defining a config flag) raised.
    flag_values: the flags defined.
    defaults: config flag name -> default file, for a flag whose
      definition failed (absl parses a default, with the overrides of
      sys.argv, when the flag is defined).

  Returns:
    The message, or None when no override explains the error.
  """
  for name, source in sorted(_config_sources(argv, flag_values,
                                             defaults).items()):
    keys = _overrides(argv, name)
    if not keys:
      continue
    try:
      config = config_flags.ConfigFileFlagParser(name).parse(source)
    except Exception:  # pylint: disable=broad-except
      continue  # the config file itself failed: the error says why
    for key in keys:
      why = unknown_key(config, key, prefix=f"--{name}.")
      if why is not None:
        return f"--{name}.{key}: {why}"
    bad = _BAD_VALUE.match(str(error))
    if (isinstance(error, flags.IllegalFlagValueError) and bad
        and bad.group(1).startswith(f"{name}.")):
      key = bad.group(1)[len(name) + 1:]
      want = field_type(config, key)
      if want is not None:
        return type_message(f"--{name}.{key}", bad.group(2), want,
                            bad.group(3))
  return None
