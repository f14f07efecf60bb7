"""Damaged files a run reads back: caught, rebuilt or named on one line.

Defect classes: flipped or truncated bytes in the prepared-data cache
(`train.ids.npy`, `train.label.npy`) were used silently (garbage labels
trained with rc 0); a cache entry without its manifest blocked every run
(the rebuild could not replace the folder); a JSON file read with a plain
`json.load` (stages.json) or valid JSON of the wrong shape (a feature map
cut down to `[]`) ended without naming the file.
"""
import json
import logging
import os

import numpy as np
import pytest

from experiments import launch
from experiments import stages
from experiments.configs import data as data_config
from flip_jax import jsonio
from flip_jax.data import cache
from flip_jax.data import features
from flip_jax.data import prepare


def _cfg():
  cfg = data_config.get_data_config("synthetic")
  cfg.synthetic.num_users, cfg.synthetic.num_movies = 30, 20
  cfg.synthetic.num_ratings = 300
  return cfg


@pytest.fixture
def entry(tmp_path):
  """(cache root, a prepared entry, its train labels and ids)."""
  p = prepare.load_dataset(_cfg(), str(tmp_path))
  return (str(tmp_path), p.cache_dir, p.splits["train"]["label"].copy(),
          p.splits["train"]["ids"].copy())


def _flip_byte(path, offset=-3):
  b = bytearray(open(path, "rb").read())
  b[offset] ^= 0xFF
  open(path, "wb").write(bytes(b))


def _reload(root, monkeypatch):
  builds = []
  real = prepare._build  # pylint: disable=protected-access
  monkeypatch.setattr(prepare, "_build",
                      lambda *a: (builds.append(1), real(*a))[1])
  return prepare.load_dataset(_cfg(), root), len(builds)


def test_manifest_records_size_and_digest(entry):
  _, path, _, _ = entry
  rec = cache.read_json(os.path.join(path, "manifest.json"))[cache.DIGESTS]
  for name in ("train.ids.npy", "train.label.npy", "stats.json",
               "feature_map.json"):
    assert rec[name]["size"] == os.path.getsize(os.path.join(path, name))
    assert len(rec[name]["crc32"]) == 8
  assert cache.problem(path) is None


@pytest.mark.parametrize("name,damage", [
    ("train.label.npy", "flip"), ("train.ids.npy", "flip"),
    ("train.ids.npy", "truncate"), ("stats.json", "truncate")])
def test_damaged_array_is_rebuilt_with_a_warning(entry, monkeypatch, caplog,
                                                 name, damage):
  root, path, labels, ids = entry
  target = os.path.join(path, name)
  if damage == "flip":
    _flip_byte(target)
  else:
    open(target, "r+b").truncate(os.path.getsize(target) // 2)
  assert name in cache.problem(path)
  with caplog.at_level(logging.WARNING):
    again, builds = _reload(root, monkeypatch)
  assert builds == 1 and again.cache_dir == path
  assert any(target in r.getMessage() for r in caplog.records)
  np.testing.assert_array_equal(again.splits["train"]["label"], labels)
  np.testing.assert_array_equal(again.splits["train"]["ids"], ids)
  assert cache.problem(path) is None
  assert not [n for n in os.listdir(root) if ".tmp-" in n]  # none aside
  _, builds = _reload(root, monkeypatch)
  assert builds == 0  # intact: reused


def test_entry_of_an_older_flip_jax_is_sealed_not_rebuilt(entry,
                                                           monkeypatch):
  """A manifest written before sizes and digests were recorded: the entry
  is trusted as it was then and its digests are recorded in place."""
  root, path, labels, _ = entry
  mpath = os.path.join(path, "manifest.json")
  m = cache.read_json(mpath)
  del m[cache.DIGESTS]
  cache.write_json(mpath, m)
  again, builds = _reload(root, monkeypatch)
  assert builds == 0
  np.testing.assert_array_equal(again.splits["train"]["label"], labels)
  assert cache.DIGESTS in cache.read_json(mpath)
  assert cache.problem(path) is None


@pytest.mark.parametrize("manifest", ["missing", "not json"])
def test_entry_without_good_manifest_does_not_block(entry, monkeypatch,
                                                    caplog, manifest):
  root, path, labels, _ = entry
  mpath = os.path.join(path, "manifest.json")
  if manifest == "missing":
    os.remove(mpath)
  else:
    open(mpath, "w").write('{"splits": ["tr')
  with caplog.at_level(logging.WARNING):
    again, builds = _reload(root, monkeypatch)
  assert builds == 1
  assert any("manifest.json" in r.getMessage() for r in caplog.records)
  np.testing.assert_array_equal(again.splits["train"]["label"], labels)
  assert cache.problem(path) is None


def test_atomic_dir_replaces_a_damaged_entry(tmp_path):
  final = str(tmp_path / "key")
  os.makedirs(final)
  np.save(os.path.join(final, "a.npy"), np.zeros(3))  # no manifest
  with cache.atomic_dir(final) as tmp:
    np.save(os.path.join(tmp, "a.npy"), np.ones(3))
    cache.write_json(os.path.join(tmp, "manifest.json"), {"w": 1})
  np.testing.assert_array_equal(np.load(os.path.join(final, "a.npy")),
                                np.ones(3))
  assert cache.is_complete(final) and os.listdir(tmp_path) == ["key"]
  # An intact entry published meanwhile by another writer is kept.
  with cache.atomic_dir(final) as tmp:
    np.save(os.path.join(tmp, "a.npy"), np.full(3, 2.0))
    cache.write_json(os.path.join(tmp, "manifest.json"), {"w": 2})
  assert cache.read_json(os.path.join(final, "manifest.json"))["w"] == 1


def test_usable_sub_entry(tmp_path):
  final = str(tmp_path / "tok-1")
  assert not cache.usable(final)
  with cache.atomic_dir(final) as tmp:
    np.save(os.path.join(tmp, "train.input_ids.npy"), np.arange(50))
    cache.write_json(os.path.join(tmp, "manifest.json"), {})
  assert cache.usable(final)
  _flip_byte(os.path.join(final, "train.input_ids.npy"))
  assert not cache.usable(final) and not os.path.exists(final)


# ------------------------------------------------------------- JSON files
def test_damaged_json_names_the_file(tmp_path):
  fm = tmp_path / "feature_map.json"
  for text in ("[]", '{"format_version": 1}', '{"fields": [1'):
    fm.write_text(text)
    with pytest.raises(ValueError) as info:
      features.FeatureMap.load(str(fm))
    msg = launch.error_message(info.value)
    assert launch.is_expected(info.value) and msg.startswith(f"{fm}: "), msg
  cfg = tmp_path / "config.json"
  cfg.write_text("[1, 2]")
  with pytest.raises(jsonio.JSONFileError,
                     match=f"^{cfg}: expected a JSON object"):
    jsonio.read_json(cfg, expect=dict)
  # stages.json of run_all, read back at every stage.
  (tmp_path / "stages.json").write_text('{"prepare": {"wall_')
  with pytest.raises(jsonio.JSONFileError) as info:
    stages.StageLog(str(tmp_path))
  assert launch.error_message(info.value).startswith(
      f"{tmp_path}/stages.json: invalid JSON")


def _read_stats(folder):
  with open(os.path.join(folder, "stats.json")) as f:
    return json.load(f)  # no local names the file: only `f`


def test_plain_json_load_error_names_the_file(tmp_path):
  (tmp_path / "stats.json").write_text('{"rows": 1')
  with pytest.raises(json.JSONDecodeError) as info:
    _read_stats(str(tmp_path))
  assert launch.error_message(info.value) == (
      "invalid JSON at line 1 column 11: Expecting ',' delimiter "
      f"(file {tmp_path}/stats.json)")
