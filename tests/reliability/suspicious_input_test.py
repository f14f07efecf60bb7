"""Suspicious input is counted: a logged warning and stats.json `warnings`.

Defect class: duplicate rating rows, repeated ids with other content (the
first row won silently), UTF-8 text in a latin-1 file (mojibake) and an
extra ratings file that is ignored all passed without a word.
"""
import gzip
import json
import logging
import pathlib

from experiments.configs import data as data_config
from flip_jax.data import books
from flip_jax.data import movielens
from flip_jax.data import prepare
from flip_jax.data import sources

USERS = [f"{u}::{'FM'[u % 2]}::25::{u % 21}::{10000 + u}" for u in range(1, 9)]
MOVIES = [f"{m}::Movie {m} (1995)::Drama" for m in range(1, 7)]
RATINGS = [f"{u}::{m}::{1 + (u * m) % 5}::{978300000 + 10 * u + m}"
           for u in range(1, 9) for m in range(1, 7)]


def _write(d, users=USERS, movies=MOVIES, ratings=RATINGS, enc="latin-1"):
  d.mkdir(exist_ok=True)
  (d / "users.dat").write_bytes(("\n".join(users) + "\n").encode(enc))
  (d / "movies.dat").write_bytes(("\n".join(movies) + "\n").encode(enc))
  (d / "ratings.dat").write_bytes(("\n".join(ratings) + "\n").encode(enc))
  return d


def _prepare(d, tmp_path):
  cfg = data_config.get_data_config("ml-1m")
  cfg.data_dir = str(d)
  return prepare.load_dataset(cfg, str(tmp_path / "cache"))


def test_clean_files_have_no_warnings(tmp_path):
  p = _prepare(_write(tmp_path / "raw"), tmp_path)
  assert p.stats["warnings"] == {}


def test_duplicates_are_counted_logged_and_in_stats(tmp_path, caplog):
  ratings = RATINGS + [RATINGS[3], RATINGS[7], "1::1::2::978300999"]
  users = USERS + ["3::F::56::1::99999", USERS[4]]  # 3 differs, 5 identical
  movies = MOVIES + ["2::Other title (1990)::Comedy"]
  d = _write(tmp_path / "raw", users, movies, ratings)
  with caplog.at_level(logging.WARNING):
    p = _prepare(d, tmp_path)
  w = p.stats["warnings"]
  assert w == {"duplicate_user_ids": 2, "duplicate_movie_ids": 1,
               "duplicate_rating_rows": 3}
  assert "users.dat: 2 row(s) repeat an earlier user id, 1 of them with " \
         "different content (the first row wins); e.g. id 3 at lines 3 and " \
         "9" in caplog.text
  assert "3 rating row(s) repeat an earlier (user, movie) pair (2 exact " \
         "copies)" in caplog.text
  # The first row wins: user 3 keeps its first gender, movie 2 its title.
  text = " ".join(p.splits["train"]["text"][:60])
  assert "Other title" not in text
  on_disk = json.loads((pathlib.Path(p.cache_dir) / "stats.json"
                        ).read_text())
  assert on_disk["warnings"] == w
  assert len(on_disk["raw_info"]["warning_messages"]) == 3
  # A reused cache logs its warnings again.
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    _prepare(d, tmp_path)
  assert "suspicious rows" in caplog.text and "duplicate_user_ids" in \
      caplog.text


def test_utf8_in_a_latin1_file_is_reported(tmp_path, caplog):
  movies = list(MOVIES)
  movies[1] = "2::Café Society (1995)::Drama"
  movies[4] = "5::Amélie (2001)::Comedy"
  d = _write(tmp_path / "raw", movies=movies, enc="utf-8")
  with caplog.at_level(logging.WARNING):
    t = movielens.load_ml1m(str(d))
  assert t.info["warnings"] == {"utf8_in_latin1_lines": 2}
  assert "movies.dat: 2 line(s) (first: line 2) are UTF-8" in caplog.text
  # Real latin-1 accents are not reported.
  d2 = _write(tmp_path / "latin", movies=movies, enc="latin-1")
  assert "warnings" not in movielens.load_ml1m(str(d2)).info


def test_ignored_second_ratings_file_is_reported(tmp_path, caplog):
  d = _write(tmp_path / "raw")
  (d / "ratings_extra.dat.gz").write_bytes(gzip.compress(b"1::1::5::1\n"))
  with caplog.at_level(logging.WARNING):
    p = _prepare(d, tmp_path)
  assert p.stats["warnings"] == {"ignored_ratings_files": 1}
  assert "also present and ignored: ratings_extra.dat.gz" in caplog.text


def test_bookcrossing_and_csv_duplicates(tmp_path):
  d = tmp_path / "bx"
  d.mkdir()
  (d / "BX-Users.csv").write_bytes(
      b'"User-ID";"Location";"Age"\n"1";"a, b";"20"\n"1";"c, d";"30"\n')
  (d / "BX-Books.csv").write_bytes(
      b'"ISBN";"Book-Title";"Book-Author";"Year-Of-Publication";"Publisher";'
      b'"Image-URL-S";"Image-URL-M";"Image-URL-L"\n'
      b'"0001";"Caf\xc3\xa9";"B";"1999";"P";"s";"m";"l"\n')
  (d / "BX-Book-Ratings.csv").write_bytes(
      b'"User-ID";"ISBN";"Book-Rating"\n"1";"0001";"8"\n"1";"0001";"9"\n')
  t = books.load_bookcrossing(str(d), drop_zero_ratings=True)
  assert t.info["warnings"] == {"duplicate_user_ids": 1,
                                "duplicate_rating_rows": 1,
                                "utf8_in_latin1_lines": 1}
  assert list(t.keys[1]) == ["a, b", "a, b"]  # the first user row wins
  (tmp_path / "t.csv").write_text("u,i,r\na,x,1\nb,y,0\na,x,1\n")
  cfg = data_config.get_data_config("csv")
  cfg.csv.path, cfg.csv.fields, cfg.csv.rating_column = "t.csv", ("u", "i"), "r"
  t = sources.load_raw(cfg, str(tmp_path))
  assert t.info["warnings"] == {"duplicate_rating_rows": 1}


def test_goodreads_repeated_book_first_wins(tmp_path):
  with gzip.open(tmp_path / "goodreads_books_x.json.gz", "wt") as f:
    for rec in ({"book_id": "1", "title": "First"},
                {"book_id": "1", "title": "Second"}):
      f.write(json.dumps(rec) + "\n")
  with gzip.open(tmp_path / "goodreads_interactions_x.json.gz", "wt") as f:
    f.write(json.dumps({"user_id": "u", "book_id": "1", "rating": 4}) + "\n")
  t = books.load_goodreads(str(tmp_path), drop_zero_ratings=True)
  assert t.info["warnings"] == {"duplicate_book_ids": 1}
  assert list(t.keys[t.field_names.index("book_title")]) == ["First"]
