"""Behaviour sequences: exact windows, ties, padding, caching, no leakage."""
import numpy as np
import pytest

from flip_jax.data import features
from flip_jax.data import pipeline
from flip_jax.data import prepare
from flip_jax.data import sequence_samples
from flip_jax.data import sequences
from flip_jax.data import textify

FIELDS = ("user_id", "movie_id", "title", "genre")
SPEC = sequences.SequenceSpec("user_id", "movie_id",
                              ("item", "genre", "year:title", "feedback"))
TITLES = {"m1": "Alpha (1990)", "m2": "Beta (1995)", "m3": "Gamma (1990)",
          "m4": "Delta", "m5": "Eps (2001)"}
GENRES = {"m1": "Drama", "m2": "Comedy", "m3": "Drama", "m4": "War",
          "m5": "Comedy"}
# (user, movie, timestamp, label) in the global time order; 'u3' appears
# only in test (an OOV user id), 'm5' only in test (an OOV item).
ROWS = [("u1", "m1", 10, 1), ("u2", "m2", 11, 0), ("u1", "m2", 12, 0),
        ("u1", "m3", 12, 1), ("u2", "m1", 13, 1), ("u1", "m4", 14, 1),
        ("u1", "m1", 15, 0), ("u2", "m3", 16, 1),                # train: 8
        ("u1", "m2", 17, 1),                                     # valid: 1
        ("u3", "m5", 18, 1), ("u2", "m4", 18, 0), ("u3", "m1", 19, 0)]
SPLIT_SIZES = {"train": 8, "valid": 1, "test": 3}


def tiny_prepared(cache_dir="") -> prepare.PreparedData:
  """ROWS as `prepare.load_dataset` lays them out (vocab: train + valid)."""
  keys = [np.array([r[0] for r in ROWS], object),
          np.array([r[1] for r in ROWS], object),
          np.array([TITLES[r[1]] for r in ROWS], object),
          np.array([GENRES[r[1]] for r in ROWS], object)]
  pre = 9
  fm = features.FeatureMap.build(FIELDS, FIELDS, [k[:pre] for k in keys])
  ids = fm.encode(keys)
  text, spans = textify.render(FIELDS, keys)
  splits, lo = {}, 0
  for name, n in SPLIT_SIZES.items():
    sl = slice(lo, lo + n)
    splits[name] = {
        "ids": ids[sl], "label": np.array([r[3] for r in ROWS[sl]],
                                          np.float32),
        "row_id": np.arange(n, dtype=np.int32), "text": text[sl],
        "spans": spans[sl],
        "timestamp": np.array([r[2] for r in ROWS[sl]], np.int64)}
    lo += n
  return prepare.PreparedData(fm, splits, {"dataset": "tiny"}, cache_dir)


def windows(store, split, length):
  s = store.splits[split]
  return sequences.gather_windows(store.tokens, s["hist_begin"],
                                  s["hist_end"], length)


def items_of(store, hist, mask, fm):
  """Window item ids decoded to movie keys, padding dropped."""
  f = fm.field_names.index("movie_id")
  out = []
  for h, m in zip(hist, mask):
    out.append(["<oov>" if i == 0 else str(fm.vocabs[f][i - 2])
                for i, keep in zip(h[:, 0], m) if keep])
  return out


def test_exact_windows_ties_and_padding():
  p = tiny_prepared()
  store = sequences.build_store(p, SPEC)
  fm = p.feature_map
  hist, mask = windows(store, "train", 4)
  assert hist.shape == (8, 4, 4) and mask.shape == (8, 4)
  got = items_of(store, hist, mask, fm)
  # Row 3 (u1, m3, t=12) ties with row 2 (u1, m2, t=12): neither sees the
  # other. Histories are oldest first.
  assert got == [[], [], ["m1"], ["m1"], ["m2"], ["m1", "m2", "m3"],
                 ["m1", "m2", "m3", "m4"], ["m2", "m1"]]
  # Left padding: real events end at the last position; padding is 0.
  np.testing.assert_array_equal(mask[5], [0, 1, 1, 1])
  assert (hist[mask == 0] == 0).all()
  # L = 3 keeps the newest three events.
  h3, m3 = windows(store, "train", 3)
  assert items_of(store, h3, m3, fm)[6] == ["m2", "m3", "m4"]
  # Test rows: the OOV user u3 keeps its own history (not u1's or u2's),
  # and u2's test row at t = 18 does not see u3's row at t = 18.
  th, tm = windows(store, "test", 8)
  assert items_of(store, th, tm, fm) == [[], ["m2", "m1", "m3"], ["<oov>"]]


def test_attribute_ids():
  p = tiny_prepared()
  store = sequences.build_store(p, SPEC)
  fm = p.feature_map
  np.testing.assert_array_equal(
      store.vocab_sizes, [fm.vocab_sizes[1], fm.vocab_sizes[3], 2 + 2, 4])
  hist, mask = windows(store, "train", 4)
  row = hist[6][mask[6] > 0]               # m1, m2, m3, m4 of u1
  years = row[:, 2]
  # m1 and m3 are 1990 (id 2), m2 1995 (id 3), m4 has no year (0).
  np.testing.assert_array_equal(years, [2, 3, 2, 0])
  np.testing.assert_array_equal(row[:, 3], [3, 2, 3, 3])    # feedback
  assert row[0, 1] == row[2, 1]                             # both Drama
  # Targets carry the item attributes only (no feedback).
  t = store.splits["train"]["target"]
  assert t.shape == (8, 3)
  np.testing.assert_array_equal(t[:, 0], [ids[0] for ids in
                                          p.splits["train"]["ids"][:, 1:2]
                                          - fm.offsets[1]])


def test_pretrain_windows_use_train_events_only():
  store = sequences.build_store(tiny_prepared(), SPEC)
  begin, end = store.pretrain_windows(length=3, stride=2, min_events=2)
  rows = [store.event_row[b:e] for b, e in zip(begin, end)]
  assert all((r < SPLIT_SIZES["train"]).all() for r in rows)
  # u1 has 5 train events: windows end after 5 and 3; u2 has 3: after 3.
  assert sorted(len(r) for r in rows) == [3, 3, 5]


def test_cache_round_trip(tmp_path):
  p = tiny_prepared(str(tmp_path))
  built = sequences.build_store(p, SPEC)
  for _ in range(2):  # build + write, then read back
    loaded = sequences.load_or_build(p, SPEC)
    np.testing.assert_array_equal(loaded.tokens, built.tokens)
    np.testing.assert_array_equal(loaded.user_offsets, built.user_offsets)
    for s in built.splits:
      for k in built.splits[s]:
        np.testing.assert_array_equal(loaded.splits[s][k],
                                      built.splits[s][k])
  assert loaded.attributes == SPEC.attributes


def test_window_transform_in_train_and_eval_batches():
  store = sequences.build_store(tiny_prepared(), SPEC)
  s = store.splits["test"]
  cols = {"label": np.zeros(3, np.float32),
          "row_id": np.arange(3, dtype=np.int32),
          "hist_begin": s["hist_begin"], "hist_end": s["hist_end"]}
  want_h, want_m = windows(store, "test", 5)
  batch = next(pipeline.eval_batches(
      cols, global_batch_size=4,
      transform=sequences.WindowTransform(store.tokens, 5)))
  np.testing.assert_array_equal(batch["hist"][:3], want_h)
  np.testing.assert_array_equal(batch["hist_mask"][:3], want_m)
  np.testing.assert_array_equal(batch["hist"][3], want_h[0])  # padding row
  assert batch["weight"][3] == 0
  it = pipeline.train_iterator(
      cols, global_batch_size=3, seed=1, process_index=0, process_count=1,
      prefetch_buffer_size=0,
      transform=sequences.WindowTransform(store.tokens, 5))
  b = next(it)
  order = np.argsort(b["row_id"])
  np.testing.assert_array_equal(b["hist"][order], want_h)
  np.testing.assert_array_equal(b["hist_mask"][order], want_m)


def test_samples_parquet(tmp_path):
  pd = pytest.importorskip("pandas")
  out = tmp_path / "s.parquet"
  assert sequence_samples.write_samples(tiny_prepared(str(tmp_path)), SPEC,
                                 str(out), 3) == len(ROWS)
  df = pd.read_parquet(out)
  assert list(df.columns) == ["row_id", "split", "user_id", "item_id",
                              "timestamp", "label", "history"]
  assert list(df["history"][0]) == []
  assert list(df["history"][6]) == ["m2", "m3", "m4"]
  assert list(df["history"][11]) == ["m5"]          # raw id, not OOV
  assert df["user_id"][9] == "u3" and df["split"][9] == "test"


def test_ml100k_no_future_leakage(shared_data_dir, tmp_path):
  """Every window on the real ML-100K against a brute-force reading."""
  pd = pytest.importorskip("pandas")
  d = shared_data_dir / "ml-100k"
  if not (d / "u.data").exists():
    pytest.skip(f"ML-100K not found in {d}")
  from experiments.configs import data as data_configs
  cfg = data_configs.get_data_config("ml-100k")
  cfg.data_dir, cfg.cache_dir = str(d), str(tmp_path)
  p = prepare.load_dataset(cfg, str(tmp_path))
  store = sequences.load_or_build(p, SPEC)
  length = 200
  user_of_event = np.repeat(np.arange(store.num_users),
                            np.diff(store.user_offsets))
  for split in ("train", "valid", "test"):
    s = store.splits[split]
    ts = p.splits[split]["timestamp"]
    b, e = s["hist_begin"], s["hist_end"]
    lo = np.maximum(b, e - length)
    assert (user_of_event[b] == user_of_event[np.maximum(e - 1, b)]).all()
    # Nothing at or after the target's time; nothing earlier left out.
    last = np.where(e > b, store.timestamp[np.maximum(e - 1, 0)], -1)
    assert (last < ts).all()
    nxt = np.minimum(e, len(store.timestamp) - 1)
    user_end = store.user_offsets[user_of_event[b] + 1]
    assert ((e == user_end) | (store.timestamp[nxt] >= ts)).all()
    hist, mask = sequences.gather_windows(store.tokens, b[:500], e[:500],
                                          length)
    np.testing.assert_array_equal(mask.sum(1), (e - lo)[:500])
  # The parquet view against pandas on the raw file for 300 random rows.
  out = tmp_path / "ml100k.parquet"
  sequence_samples.write_samples(p, SPEC, str(out), length)
  df = pd.read_parquet(out)
  raw = pd.read_csv(d / "u.data", sep="\t", names=["u", "i", "r", "t"])
  raw = raw.sort_values("t", kind="stable").reset_index(drop=True)
  assert (raw["t"].to_numpy() == df["timestamp"].to_numpy()).all()
  for r in np.random.default_rng(0).choice(len(df), 300, replace=False):
    u, t = raw["u"][r], raw["t"][r]
    want = raw["i"][(raw["u"] == u) & (raw["t"] < t)].to_numpy()[-length:]
    np.testing.assert_array_equal(df["history"][r], want)
    assert df["user_id"][r] == u and df["item_id"][r] == raw["i"][r]
