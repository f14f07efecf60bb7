"""Dotted names in docstrings, comments and docs point at code that exists.

A module moved by a refactor leaves ``flip_jax.old.place`` behind in
the prose that explains it; this finds every ``flip_jax.a.b`` written in
the library, the experiments, the benchmarks and the top-level docs and
checks that its longest module prefix is a file or package of the tree and
that the rest names something that module defines or imports.
"""
import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[1]
SOURCES = [*REPO.glob("flip_jax/**/*.py"), *REPO.glob("experiments/**/*.py"),
           *REPO.glob("benchmarks/**/*.py"), REPO / "README.md",
           REPO / "BUILD.md"]
DOTTED = re.compile(r"\bflip_jax(?:\.[A-Za-z_][A-Za-z_0-9]*)+")


def _module_file(parts):
  path = REPO.joinpath(*parts)
  if (path / "__init__.py").exists():
    return path / "__init__.py"
  if path.with_suffix(".py").exists():
    return path.with_suffix(".py")
  return None


def _defines(source: str, name: str) -> bool:
  return re.search(
      rf"^\s*(def|class)\s+{name}\b|^\s*{name}\s*[:=]|"
      rf"\bimport\b[^\n]*\b{name}\b", source, re.M) is not None


def _unresolved(ref: str) -> str | None:
  parts = ref.split(".")
  for cut in range(len(parts), 0, -1):
    module = _module_file(parts[:cut])
    if module is None:
      continue
    rest = parts[cut:]
    if not rest:
      return None
    if _defines(module.read_text(), rest[0]):
      return None
    return f"{module.relative_to(REPO)} defines no {rest[0]!r}"
  return "no such module"  # not even flip_jax (unreachable from DOTTED)


def test_every_dotted_flip_jax_name_resolves():
  bad = []
  for path in SOURCES:
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
      for ref in DOTTED.findall(line):
        why = _unresolved(ref.rstrip("."))
        if why:
          bad.append(f"{path.relative_to(REPO)}:{lineno}: {ref} ({why})")
  assert not bad, "stale references:\n" + "\n".join(bad)


def test_a_stale_reference_is_found():
  assert _unresolved("flip_jax.models.finetune") is not None
  assert "defines no 'nowhere'" in _unresolved("flip_jax.nowhere.place")
  assert "defines no 'nope'" in _unresolved("flip_jax.train.loop.nope")
  assert _unresolved("flip_jax.train.loop") is None
  assert _unresolved("flip_jax.models.ctr.rep_dim") is None
