"""flip_jax.jsonio: atomic JSON writes and reads whose errors name the file."""
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from flip_jax import jsonio


def test_write_json_atomic(tmp_path):
  path = tmp_path / "sub" / "best.json"
  jsonio.write_json_atomic(path, {"step": np.int64(3),
                                  "auc": np.float32(0.5),
                                  "v": jnp.arange(2)})
  assert json.loads(path.read_text()) == {"step": 3, "auc": 0.5, "v": [0, 1]}
  jsonio.write_json_atomic(path, {"step": 4})
  assert json.loads(path.read_text()) == {"step": 4}
  with pytest.raises(TypeError, match="cannot encode object"):
    jsonio.write_json_atomic(path, {"bad": object()})
  assert json.loads(path.read_text()) == {"step": 4}
  assert sorted(os.listdir(path.parent)) == ["best.json"]


def test_failing_serialisation_leaves_the_old_file_intact(tmp_path):
  path = tmp_path / "results.json"
  jsonio.write_json_atomic(path, {"auc": 0.75, "rows": list(range(50))})
  before = path.read_bytes()
  # The failure comes after part of the object was already serialised.
  with pytest.raises(TypeError, match="cannot encode object"):
    jsonio.write_json_atomic(path, {"a": list(range(1000)), "z": object()})
  assert path.read_bytes() == before
  with pytest.raises(ValueError, match="Circular reference"):
    loop = []
    loop.append(loop)
    jsonio.write_json_atomic(path, {"loop": loop})
  assert path.read_bytes() == before
  assert os.listdir(tmp_path) == ["results.json"]  # no temp files left


def test_write_is_pretty_sorted_and_readable(tmp_path):
  path = tmp_path / "cfg.json"
  jsonio.write_json_atomic(path, {"b": 1, "a": tmp_path / "x"})
  text = path.read_text()
  assert text == '{\n  "a": "%s",\n  "b": 1\n}\n' % (tmp_path / "x")
  assert oct(os.stat(path).st_mode & 0o777) == oct(0o644)
  assert jsonio.read_json(path) == {"a": str(tmp_path / "x"), "b": 1}
  assert jsonio.read_json(str(path)) == jsonio.read_json(path)


def test_read_json_errors_name_the_file(tmp_path):
  bad = tmp_path / "stats.json"
  bad.write_text('{"rows": 3,\n  "auc": }\n')
  with pytest.raises(jsonio.JSONFileError) as e:
    jsonio.read_json(bad)
  assert str(e.value).startswith(f"{bad}: invalid JSON at line 2 column 10")
  assert (e.value.path, e.value.lineno, e.value.colno) == (str(bad), 2, 10)
  assert isinstance(e.value, ValueError)
  empty = tmp_path / "empty.json"
  empty.write_text("")
  with pytest.raises(ValueError, match=f"{empty}: invalid JSON at line 1"):
    jsonio.read_json(empty)
  latin = tmp_path / "latin.json"
  latin.write_bytes(b'{"name": "caf\xe9"}')
  with pytest.raises(ValueError, match=f"{latin}: invalid JSON: not UTF-8"):
    jsonio.read_json(latin)
  with pytest.raises(FileNotFoundError, match="missing.json"):
    jsonio.read_json(tmp_path / "missing.json")

