"""Split leakage on the real MovieLens-100K.

Checks `prepare.load_dataset` against an independent re-reading of the raw
GroupLens files (u.data / u.user / u.item parsed here with numpy and plain
Python, not with flip_jax.data):

* the splits are a global-time 80/10/10 split of all 100,000 ratings (rows
  sorted by timestamp, stable so ties keep u.data order, then cut by
  position): every train timestamp <= every valid timestamp <= every test
  timestamp, and each split is exactly the corresponding slice of the raw
  rows in that order;
* train, valid and test are disjoint row sets whose union is the whole of
  u.data (the pretraining rows, train + valid -- what the FLIP pretraining
  task concatenates -- therefore hold no test row);
* vocabulary rule (prepare.py / features.py): vocabularies and `counts` are
  built on the *pretraining rows = train + valid* (labels unused; with the
  'official' protocol, train only). Test rows never contribute: a value seen
  only in test rows is absent from the vocabulary and encodes to its field's
  OOV id (local id 0), whose count is 0;
* the MTM noise distribution (`make_consts` -> `noise_log_probs(counts)`) is
  q = counts / sum(counts) over those rows, so a test-only value (= the OOV
  id) has q = 0 (log q = -inf, the minimum; never drawn as noise).

Row identity: ML-100K has one rating per (user, movie), and row_id restarts at
0 in every split, so rows are identified by the (user id, movie id) read back
from each row's rendered text through its field spans.
"""
import collections

import numpy as np
import pytest

from experiments.configs import data as data_config
from flip_jax import noise
from flip_jax.data import features
from flip_jax.data import prepare


def _make_consts():
  """The pretraining model's make_consts (its module moved; imported late)."""
  try:
    from flip_jax.methods.flip import pretrain_model  # pylint: disable=g-import-not-at-top
    return pretrain_model.make_consts
  except ImportError:
    from flip_jax.models import flip  # pylint: disable=g-import-not-at-top
    return flip.make_consts

FIELDS = ("user_id", "gender", "age", "occupation", "zipcode", "movie_id",
          "title", "genre")
GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's",
          "Comedy", "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir",
          "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
          "War", "Western")
SPLITS = ("train", "valid", "test")


def _age_bucket(age: int) -> str:
  # ML-1M age codes: 1 (<18), 18, 25, 35, 45, 50, 56 (lower bounds).
  return str(max([c for c in (1, 18, 25, 35, 45, 50, 56) if c <= age]))


@pytest.fixture(scope="module")
def raw(shared_data_dir):
  """Independent parse: time-ordered raw rows and their 8 field keys."""
  d = shared_data_dir / "ml-100k"
  if not (d / "u.data").is_file():
    pytest.skip(f"ML-100K not found at {d}")
  data = np.loadtxt(d / "u.data", dtype=np.int64, delimiter="\t")
  assert data.shape == (100_000, 4)
  user, item, rating, ts = data.T
  order = np.argsort(ts, kind="stable")
  users = {}
  for line in (d / "u.user").read_text(encoding="latin-1").splitlines():
    uid, age, gender, occ, zipc = line.split("|")
    users[int(uid)] = (uid, gender, _age_bucket(int(age)), occ, zipc)
  items = {}
  for line in (d / "u.item").read_text(encoding="latin-1").splitlines():
    parts = line.split("|")
    flags = parts[5:]
    genre = GENRES[flags.index("1")] if "1" in flags else "unknown"
    items[int(parts[0])] = (parts[0], parts[1], genre)
  user, item, rating, ts = user[order], item[order], rating[order], ts[order]
  keys = {}
  ucols = list(zip(*[users[u] for u in user]))
  icols = list(zip(*[items[i] for i in item]))
  for f, col in zip(FIELDS, ucols + icols):
    keys[f] = np.asarray(col, dtype=object)
  n = len(ts)
  a, b = int(n * 0.8), int(n * 0.9)
  return {"user": user, "item": item, "rating": rating, "ts": ts,
          "keys": keys, "bounds": {"train": (0, a), "valid": (a, b),
                                   "test": (b, n)}}


@pytest.fixture(scope="module")
def ml100k(shared_data_dir, tmp_path_factory):
  cfg = data_config.get_data_config("ml-100k")
  cfg.data_dir = str(shared_data_dir / "ml-100k")
  return prepare.load_dataset(cfg, str(tmp_path_factory.mktemp("cache")))


def _field_from_text(split, f: int) -> np.ndarray:
  return np.asarray([t[s[f, 0]:s[f, 1]]
                     for t, s in zip(split["text"], split["spans"])], object)


@pytest.fixture(scope="module")
def pairs(ml100k):
  """split -> int64 [n, 2] (user id, movie id) read from the text."""
  fu, fm = FIELDS.index("user_id"), FIELDS.index("movie_id")
  return {s: np.stack([_field_from_text(ml100k.splits[s], fu).astype(np.int64),
                       _field_from_text(ml100k.splits[s], fm).astype(np.int64)],
                      1) for s in SPLITS}


def _pair_codes(p: np.ndarray) -> np.ndarray:
  return p[:, 0] * 10_000 + p[:, 1]


def test_config_and_sizes(ml100k, raw):
  cfg = data_config.get_data_config("ml-100k")
  assert cfg.subsample == 1.0
  assert cfg.protocol == "flip_jax"
  assert tuple(cfg.split_fractions) == (0.8, 0.1, 0.1)
  assert ml100k.stats["raw_rows"] == ml100k.stats["rows"] == 100_000
  sizes = {s: len(ml100k.splits[s]["label"]) for s in SPLITS}
  assert sizes == {"train": 80_000, "valid": 10_000, "test": 10_000}
  assert ml100k.feature_map.field_names == FIELDS


def test_global_time_split(ml100k, raw, pairs):
  ts = {s: ml100k.splits[s]["timestamp"] for s in SPLITS}
  assert all((t >= 0).all() for t in ts.values())  # real timestamps kept
  assert ts["train"].max() <= ts["valid"].min()
  assert ts["valid"].max() <= ts["test"].min()
  for s in SPLITS:
    assert (np.diff(ts[s]) >= 0).all(), s
  # Each split is exactly its slice of the raw rows in stable time order.
  for s in SPLITS:
    lo, hi = raw["bounds"][s]
    np.testing.assert_array_equal(pairs[s][:, 0], raw["user"][lo:hi])
    np.testing.assert_array_equal(pairs[s][:, 1], raw["item"][lo:hi])
    np.testing.assert_array_equal(ts[s], raw["ts"][lo:hi])
    np.testing.assert_array_equal(
        ml100k.splits[s]["label"], (raw["rating"][lo:hi] >= 4).astype(
            np.float32))


def test_rows_disjoint_and_complete(ml100k, raw, pairs):
  raw_codes = _pair_codes(np.stack([raw["user"], raw["item"]], 1))
  assert len(np.unique(raw_codes)) == 100_000  # one rating per (user, movie)
  codes = {s: _pair_codes(pairs[s]) for s in SPLITS}
  for s in SPLITS:
    assert len(np.unique(codes[s])) == len(codes[s]), s
  assert not np.intersect1d(codes["train"], codes["valid"]).size
  assert not np.intersect1d(codes["train"], codes["test"]).size
  assert not np.intersect1d(codes["valid"], codes["test"]).size
  union = np.concatenate([codes[s] for s in SPLITS])
  assert len(union) == 100_000
  np.testing.assert_array_equal(np.sort(union), np.sort(raw_codes))
  # The pretraining rows (pretrain.py: train + valid) are the first 90 %.
  pre = np.concatenate([codes["train"], codes["valid"]])
  assert not np.isin(codes["test"], pre).any()


def test_vocab_and_counts_from_train_plus_valid(ml100k, raw):
  fm = ml100k.feature_map
  assert fm.meta["count_rows"] == "train + valid"
  pre_hi = raw["bounds"]["valid"][1]
  for f, name in enumerate(FIELDS):
    expect = collections.Counter(raw["keys"][name][:pre_hi].tolist())
    vocab = fm.vocabs[f].tolist()
    assert set(vocab) == set(expect), name
    off = int(fm.offsets[f])
    got = fm.counts[off:off + int(fm.vocab_sizes[f])]
    assert got[features.OOV] == 0 and got[features.MASK] == 0
    assert {v: int(c) for v, c in zip(vocab, got[features.NUM_RESERVED:])
            } == dict(expect), name
    assert got.sum() == pre_hi
  # Same from the prepared ids: counts = bincount(train + valid ids) and
  # differ from what counting the test rows too would give.
  n = fm.num_features
  pre_ids = np.concatenate([ml100k.splits["train"]["ids"],
                            ml100k.splits["valid"]["ids"]]).ravel()
  np.testing.assert_array_equal(fm.counts, np.bincount(pre_ids, minlength=n))
  all_ids = np.concatenate([pre_ids, ml100k.splits["test"]["ids"].ravel()])
  with_test = np.bincount(all_ids, minlength=n)
  with_test[fm.reserved_ids()] = 0
  assert not np.array_equal(fm.counts, with_test)
  # Pretraining rows never hold an OOV id (their values built the vocab).
  assert not fm.is_reserved(pre_ids).any()


def _test_only(raw, name):
  pre_hi = raw["bounds"]["valid"][1]
  seen = set(raw["keys"][name][:pre_hi].tolist())
  test_keys = raw["keys"][name][pre_hi:]
  only = np.asarray([k not in seen for k in test_keys.tolist()])
  return test_keys, only


def test_test_only_values_are_oov(ml100k, raw):
  fm = ml100k.feature_map
  test_ids = ml100k.splits["test"]["ids"]
  found = {}
  for f, name in enumerate(FIELDS):
    test_keys, only = _test_only(raw, name)
    found[name] = (len(set(test_keys[only].tolist())), int(only.sum()))
    oov = fm.oov_ids()[f]
    # Exactly the test rows whose value is test-only get the OOV id.
    np.testing.assert_array_equal(test_ids[:, f] == oov, only, err_msg=name)
    for v in set(test_keys[only].tolist()):
      assert v not in set(fm.vocabs[f].tolist()), (name, v)
  # ML-100K has users and movies first seen in the last 10 % of time.
  assert found["user_id"][0] > 0 and found["movie_id"][0] > 0, found
  # encode() of a test-only user id gives the user field's OOV id.
  test_keys, only = _test_only(raw, "user_id")
  cols = [np.asarray([fm.vocabs[f][0]], object) for f in range(len(FIELDS))]
  cols[0] = np.asarray([test_keys[only][0]], object)
  enc = fm.encode(cols)[0]
  assert enc[0] == fm.oov_ids()[0]
  assert not fm.is_reserved(enc[1:]).any()


def test_noise_gives_test_only_values_zero_probability(ml100k, raw):
  fm = ml100k.feature_map
  consts = _make_consts()(fm)
  log_q = consts["log_q"]
  # Independent q from the raw train + valid keys.
  pre_hi = raw["bounds"]["valid"][1]
  q = np.zeros(fm.num_features)
  for f, name in enumerate(FIELDS):
    cnt = collections.Counter(raw["keys"][name][:pre_hi].tolist())
    for i, v in enumerate(fm.vocabs[f].tolist()):
      q[fm.offsets[f] + features.NUM_RESERVED + i] = cnt[v]
  q /= q.sum()
  real = q > 0
  np.testing.assert_allclose(np.exp(log_q[real]), q[real], rtol=1e-5)
  assert np.isneginf(log_q[~real]).all()
  np.testing.assert_array_equal(
      log_q, np.asarray(noise.noise_log_probs(fm.counts), np.float32))
  # Every pretraining value has q > 0; the test-only rows' ids (OOV) have
  # the minimum, q = 0, globally and within their field.
  assert (~real).sum() == 2 * fm.num_fields  # only OOV and MASK ids
  test_ids = ml100k.splits["test"]["ids"]
  for f, name in enumerate(FIELDS):
    _, only = _test_only(raw, name)
    ids = test_ids[only, f]
    assert np.isneginf(log_q[ids]).all(), name
    assert np.isneginf(consts["log_q_field"][ids]).all(), name
    seen = test_ids[~only, f]
    assert np.isfinite(log_q[seen]).all(), name
