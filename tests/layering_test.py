"""Package layering: flip_jax.models never imports export or train code;
flip_jax.export never imports train or methods code."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "flip_jax"
FORBIDDEN = ("flip_jax.export", "flip_jax.train")


def _imports(path: pathlib.Path) -> list[str]:
  out = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      out += [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      out.append(node.module)
      out += [f"{node.module}.{a.name}" for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level:
      raise AssertionError(f"{path}: relative import (use absolute imports)")
  return out


def test_models_import_neither_export_nor_train():
  files = sorted((ROOT / "models").rglob("*.py"))
  assert files
  bad = [f"{f.relative_to(ROOT.parent)}: {name}" for f in files
         for name in _imports(f)
         if any(name == m or name.startswith(m + ".") for m in FORBIDDEN)]
  assert not bad, bad


def test_export_imports_neither_train_nor_methods():
  files = sorted((ROOT / "export").rglob("*.py"))
  assert files
  forbidden = ("flip_jax.train", "flip_jax.methods")
  bad = [f"{f.relative_to(ROOT.parent)}: {name}" for f in files
         for name in _imports(f)
         if any(name == m or name.startswith(m + ".") for m in forbidden)]
  assert not bad, bad


def test_the_checker_sees_a_forbidden_import(tmp_path):
  probe = tmp_path / "probe.py"
  probe.write_text("from flip_jax import train\nimport flip_jax.export.x\n")
  names = _imports(probe)
  assert "flip_jax.train" in names and "flip_jax.export.x" in names
