"""load_dataset / tokenize_dataset on synthetic data: rules, cache, errors."""
import os

import numpy as np
import pytest

from experiments.configs import data as data_config
from flip_jax.data import cache
from flip_jax.data import prepare
from flip_jax.data import rawio
from flip_jax.data import synthetic


def _cfg(**kw):
  cfg = data_config.get_data_config("synthetic")
  cfg.synthetic.num_users, cfg.synthetic.num_movies = 60, 40
  cfg.synthetic.num_ratings = 800
  for k, v in kw.items():
    cfg[k] = v
  return cfg


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  return prepare.load_dataset(_cfg(), str(tmp_path_factory.mktemp("c")))


def test_synthetic_splits_and_rules(prepared):
  s = prepared.stats
  assert (s["train_rows"], s["valid_rows"], s["test_rows"]) == (640, 80, 80)
  assert s["num_fields"] == 8 and s["label_rule"] == "rating >= 4"
  ts = np.concatenate([prepared.splits[k]["timestamp"]
                       for k in ("train", "valid", "test")])
  assert (np.diff(ts) >= 0).all()
  fm = prepared.feature_map
  assert fm.meta["split_sizes"] == {"train": 640, "valid": 80, "test": 80}
  assert "timestamp" in fm.meta["row_order"]
  # Vocab from train+valid only: test-only values are OOV.
  pre = np.concatenate([prepared.splits[k]["ids"] for k in ("train",
                                                            "valid")])
  assert not fm.is_reserved(pre).any()
  test_ids = prepared.splits["test"]["ids"]
  assert set(np.unique(test_ids[fm.is_reserved(test_ids)])) <= set(
      fm.oov_ids().tolist())
  for split in prepared.splits.values():
    assert split["ids"].dtype == np.int32 and split["label"].dtype == (
        np.float32)
    assert split["spans"].shape == (len(split["label"]), 8, 2)
    np.testing.assert_array_equal(split["row_id"],
                                  np.arange(len(split["label"])))


def test_tokenize_dataset_cached(prepared):
  cols = prepare.tokenize_dataset(prepared, "minilm-l6", 48)
  tr = cols["train"]
  assert tr["input_ids"].shape == (640, 48)
  assert {"ids", "label", "row_id", "attention_mask", "token_field"} <= set(tr)
  assert prepared.stats["text"]["max_length"] == 48
  again = prepare.tokenize_dataset(prepared, "minilm-l6", 48)
  np.testing.assert_array_equal(again["valid"]["input_ids"],
                                cols["valid"]["input_ids"])
  assert len([d for d in os.listdir(prepared.cache_dir)
              if d.startswith("tok-")]) == 1


def test_cache_is_reused(prepared, monkeypatch):
  root = os.path.dirname(prepared.cache_dir)
  monkeypatch.setattr(prepare, "_build", lambda *a: pytest.fail("rebuilt"))
  again = prepare.load_dataset(_cfg(), root)
  assert again.cache_dir == prepared.cache_dir
  np.testing.assert_array_equal(again.splits["test"]["ids"],
                                prepared.splits["test"]["ids"])
  assert list(again.splits["test"]["text"]) == list(
      prepared.splits["test"]["text"])


def test_crash_mid_write_leaves_no_cache(tmp_path, monkeypatch):
  calls = []
  real = cache.save_columns

  def crash(directory, prefix, columns):
    calls.append(prefix)
    if len(calls) == 2:  # after the train split is on disk
      raise KeyboardInterrupt("simulated crash")
    return real(directory, prefix, columns)

  monkeypatch.setattr(cache, "save_columns", crash)
  with pytest.raises(KeyboardInterrupt):
    prepare.load_dataset(_cfg(), str(tmp_path))
  left = [d for d in os.listdir(tmp_path) if d.startswith("synthetic-")]
  assert left == []  # neither the entry nor its temp directory
  monkeypatch.setattr(cache, "save_columns", real)
  ok = prepare.load_dataset(_cfg(), str(tmp_path))
  assert cache.is_complete(ok.cache_dir)


def test_protocol_official_subsample_and_drop_neutral(tmp_path):
  p = prepare.load_dataset(_cfg(protocol="official"), str(tmp_path))
  assert sorted(p.splits) == ["test", "train"]
  assert (p.stats["train_rows"], p.stats["test_rows"]) == (720, 80)
  assert p.feature_map.meta["protocol"] == "official"
  q = prepare.load_dataset(_cfg(subsample=0.25, drop_neutral=True),
                           str(tmp_path))
  assert q.stats["rows"] == round(0.25 * (800 - q.stats["dropped_neutral"]))
  assert q.stats["dropped_neutral"] > 0
  assert "rating 3 dropped" in q.stats["label_rule"]
  assert "subsample" in q.feature_map.meta["row_order"]


def test_bad_inputs(tmp_path):
  with pytest.raises(ValueError, match="known datasets"):
    prepare.load_dataset(_cfg(dataset="movielens-9m"), str(tmp_path))
  cfg = data_config.get_data_config("ml-1m")
  cfg.data_dir = str(tmp_path)
  with pytest.raises(rawio.DataError, match="users.dat"):
    prepare.load_dataset(cfg, str(tmp_path / "c"))
  with pytest.raises(rawio.DataError, match="need both classes"):
    prepare.load_dataset(_cfg(label_threshold=9.0), str(tmp_path))
  with pytest.raises(rawio.DataError, match="empty"):
    prepare.load_dataset(_cfg(split_fractions=(0.95, 0.05, 0.0)),
                         str(tmp_path))
  raw = tmp_path / "raw"
  synthetic.generate(str(raw), num_users=5, num_movies=5, num_ratings=10,
                     seed=0)
  with open(raw / "ratings.dat", "a", encoding="latin-1") as f:
    f.write("1::2::5\n")
  cfg.data_dir = str(raw)
  with pytest.raises(rawio.DataError, match=r"ratings.dat:11: expected 4"):
    prepare.load_dataset(cfg, str(tmp_path / "c"))


def test_synthetic_signal_in_ids_and_words(tmp_path):
  raw = tmp_path / "raw"
  synthetic.generate(str(raw), num_users=200, num_movies=150,
                     num_ratings=8000, seed=1)
  from flip_jax.data import movielens  # pylint: disable=g-import-not-at-top
  t = movielens.load_ml1m(str(raw))
  y = t.rating >= 4
  sentiment = synthetic.word_sentiment()
  title = t.values[6]
  score = np.array([np.mean([sentiment[w.lower()] for w in s.split(" (")[0]
                             .split() if w.lower() in sentiment])
                    for s in title])
  assert y[score > 0.3].mean() - y[score < -0.3].mean() > 0.2
  users = t.keys[0]
  rate = {u: y[users == u].mean() for u in np.unique(users)}
  per_user = np.array([rate[u] for u in users])
  assert np.corrcoef(per_user, y)[0, 1] > 0.2


def test_cache_key_follows_raw_files_and_config(tmp_path):
  raw = tmp_path / "raw"
  synthetic.generate(str(raw), num_users=20, num_movies=20, num_ratings=150,
                     seed=0)
  cfg = data_config.get_data_config("ml-1m")
  cfg.data_dir = str(raw)
  a = prepare.load_dataset(cfg, str(tmp_path / "c"))
  with open(raw / "ratings.dat", "a", encoding="latin-1") as f:
    f.write("1::2::5::999999999999\n")
  b = prepare.load_dataset(cfg, str(tmp_path / "c"))
  assert b.cache_dir != a.cache_dir and b.stats["rows"] == 151
  cfg.label_threshold = 5.0
  c = prepare.load_dataset(cfg, str(tmp_path / "c"))
  assert c.cache_dir not in (a.cache_dir, b.cache_dir)
  assert c.stats["label_rule"] == "rating >= 5"


def test_default_cache_root_is_one_rule(tmp_path):
  cfg = data_config.get_data_config("synthetic")
  assert cfg.cache_dir == ""
  run = tmp_path / "runs" / "pretrain"
  want = str(tmp_path / "runs" / ".flip_jax_cache")
  assert prepare.default_cache_root(cfg, str(run)) == want
  assert prepare.default_cache_root(cfg, run) == want        # PathLike
  assert prepare.default_cache_root(cfg, str(run) + "/") == want
  # Relative workdirs resolve against the current directory.
  assert prepare.default_cache_root(cfg, "w") == os.path.join(
      os.getcwd(), ".flip_jax_cache")
  cfg.cache_dir = "some/cache"                               # as configured
  assert prepare.default_cache_root(cfg, str(run)) == "some/cache"


def test_dataset_names_come_from_the_reader_registry():
  from flip_jax.data import sources  # pylint: disable=g-import-not-at-top
  names = sources.dataset_names()
  assert names == ("synthetic", "ml-1m", "ml-100k", "bookcrossing",
                   "goodreads", "csv")
  assert set(names) == set(sources.READERS)
  assert data_config.DATASETS == names
  for name in names:  # every name has a data config
    assert data_config.get_data_config(name).dataset == name
  from experiments.configs import common  # pylint: disable=g-import-not-at-top
  assert not hasattr(common, "DATASETS")


def test_concurrent_writers_keep_each_others_temp_dirs(tmp_path):
  """Two writers of one key at once (two stages sharing a cache): the first
  to finish removes the leftovers of dead writers only, never the live
  writer's directory; the second then finds the entry and keeps it."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  final = str(tmp_path / "key")
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  import socket  # pylint: disable=g-import-not-at-top
  stale = tmp_path / f"key.tmp-{socket.gethostname()}-{dead.stdout.strip()}-x"
  stale.mkdir()
  foreign = tmp_path / "key.tmp-otherhost-1-y"  # another host's, fresh
  foreign.mkdir()
  with cache.atomic_dir(final) as slow:
    (tmp_path / "probe").write_text("")
    with cache.atomic_dir(final) as fast:
      cache.write_json(os.path.join(fast, "manifest.json"), {"w": "fast"})
    assert os.path.isdir(slow)  # the live writer's files survive
    assert not stale.exists() and foreign.exists()
    np.save(os.path.join(slow, "a.npy"), np.zeros(3))
    cache.write_json(os.path.join(slow, "manifest.json"), {"w": "slow"})
  assert cache.read_json(os.path.join(final, "manifest.json"))["w"] in (
      "fast", "slow")
  assert not os.path.exists(slow)
