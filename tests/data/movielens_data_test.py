"""Real MovieLens data: parsing, labels, time-ordered splits and prompts."""
import numpy as np
import pytest

from experiments.configs import data as data_config
from flip_jax.data import movielens
from flip_jax.data import prepare
from flip_jax.data import tokenize as tokenize_lib

FIRST_ML1M_PROMPT = (
    "User ID is 2999. Gender is male. Age is 25-34. Job is "
    "executive/managerial. Zipcode is 33813. Movie ID is 2194. Title is "
    "Untouchables, The (1987). Film genre is Action.")
SPEC_EXAMPLE = (
    "User ID is 1. Gender is female. Age is under 18. Job is K-12 student. "
    "Zipcode is 48067. Movie ID is 1193. Title is One Flew Over the Cuckoo's "
    "Nest (1975). Film genre is Drama.")


@pytest.fixture(scope="module")
def ml1m(shared_data_dir, tmp_path_factory):
  cfg = data_config.get_data_config("ml-1m")
  cfg.data_dir = str(shared_data_dir / "ml-1m")
  return prepare.load_dataset(cfg, str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def minilm():
  return tokenize_lib.load_tokenizer("minilm-l6")


def test_ml1m_counts(ml1m):
  assert ml1m.stats["raw_rows"] == 487_650
  assert ml1m.stats["rows"] == 487_650
  assert ml1m.stats["raw_info"]["num_users"] == 6040
  assert ml1m.stats["raw_info"]["num_movies"] == 3883
  assert ml1m.stats["field_names"] == list(movielens.FIELD_NAMES)
  sizes = {k: len(v["label"]) for k, v in ml1m.splits.items()}
  assert sizes == {"train": 390_120, "valid": 48_765, "test": 48_765}
  assert ml1m.feature_map.meta["split_sizes"] == sizes


def test_ml1m_time_order_and_labels(ml1m):
  ts = np.concatenate([ml1m.splits[s]["timestamp"]
                       for s in ("train", "valid", "test")])
  assert (np.diff(ts) >= 0).all()
  assert ml1m.stats["label_rule"] == "rating >= 4"
  assert 0.5 < ml1m.stats["positive_rate"] < 0.6


def test_ml1m_prompts(ml1m):
  train = ml1m.splits["train"]
  assert train["text"][0] == FIRST_ML1M_PROMPT
  fm = ml1m.feature_map
  key = fm.encode([np.array([v], object) for v in
                   ("1", "F", "1", "10", "48067", "1193",
                    "One Flew Over the Cuckoo's Nest (1975)", "Drama")])[0]
  hits = [s["text"][i] for s in ml1m.splits.values()
          for i in np.flatnonzero((s["ids"] == key).all(1))]
  assert hits == [SPEC_EXAMPLE]
  for text, spans in zip(train["text"][:50], train["spans"][:50]):
    for (a, b), name in zip(spans, ml1m.feature_map.display_names):
      assert text[a - len(name) - 4:a] == f"{name} is "
      assert text[b] == "."


def test_ml1m_latin1_titles(ml1m):
  fm = ml1m.feature_map
  f = fm.field_names.index("title")
  titles = set(fm.vocabs[f].tolist())
  assert "Misérables, Les (1995)" in titles
  train = ml1m.splits["train"]
  g = fm.encode([np.array(["Misérables, Les (1995)"], object)
                 if i == f else np.array(["?"], object)
                 for i in range(fm.num_fields)])[0, f]
  row = int(np.flatnonzero(train["ids"][:, f] == g)[0])
  assert "Title is Misérables, Les (1995). Film genre is Drama." in (
      train["text"][row])


def test_ml1m_ids_match_feature_map(ml1m):
  fm = ml1m.feature_map
  ids = ml1m.splits["train"]["ids"][:5]
  assert fm.decode(ids[:1])[0][0] == "2999"
  for f in range(fm.num_fields):
    assert ((ids[:, f] >= fm.offsets[f] + 2)
            & (ids[:, f] < fm.offsets[f] + fm.vocab_sizes[f])).all()
  # counts are over train + valid and zero on reserved ids.
  assert fm.counts[fm.reserved_ids()].sum() == 0
  n_pre = len(ml1m.splits["train"]["label"]) + len(ml1m.splits["valid"]
                                                    ["label"])
  for f in range(fm.num_fields):
    lo, hi = fm.offsets[f], fm.offsets[f] + fm.vocab_sizes[f]
    assert fm.counts[lo:hi].sum() == n_pre


def test_ml1m_token_fields_decode_to_values(ml1m, minilm):
  valid = ml1m.splits["valid"]
  texts, spans = valid["text"][:300], valid["spans"][:300]
  cols, stats = tokenize_lib.tokenize_texts(minilm, texts, spans, 100)
  assert stats["tokenize_path"] == "clauses"
  assert stats["truncated_rows"] == 0
  for r in range(len(texts)):
    for f, (a, b) in enumerate(spans[r]):
      toks = cols["input_ids"][r][cols["token_field"][r] == f]
      decoded = minilm.decode(toks.tolist()).replace(" ", "")
      want = minilm.backend_tokenizer.normalizer.normalize_str(
          texts[r][a:b]).replace(" ", "")
      assert decoded == want, (r, f, decoded, want)


def test_ml100k(shared_data_dir, tmp_path):
  cfg = data_config.get_data_config("ml-100k")
  cfg.data_dir = str(shared_data_dir / "ml-100k")
  raw = movielens.load_ml100k(cfg.data_dir)
  assert raw.num_rows == 100_000
  p = prepare.load_dataset(cfg, str(tmp_path))
  assert p.stats["rows"] == 100_000
  assert sum(len(s["label"]) for s in p.splits.values()) == 100_000
  first = p.splits["train"]["text"][0]
  assert first.startswith("User ID is 259. Gender is male. Age is 18-24. "
                          "Job is student.")
