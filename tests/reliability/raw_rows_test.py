"""Raw rows have exactly their fields and values in their documented ranges.

Defect class: a line missing a field followed by a line with one extra field
passed the fast parser and every later field moved (a rating of 978196418, a
timestamp of 15); ratings outside the scale were labelled. Every reader must
stop with an error naming file:line.
"""
import gzip
import json

import numpy as np
import pandas as pd
import pytest

from experiments.configs import data as data_config
from flip_jax.data import books
from flip_jax.data import movielens
from flip_jax.data import rawio
from flip_jax.data import rawparse
from flip_jax.data import sources

USERS = ["1::F::1::10::48067", "2::M::56::16::70072", "3::M::25::15::55117"]
MOVIES = ["1::Toy Story (1995)::Animation|Children's|Comedy",
          "2::Jumanji (1995)::Adventure|Children's|Fantasy"]
RATINGS = ["1::1::5::978300760", "1::2::3::978302109", "2::1::4::978301968",
           "2::2::1::978300275", "3::1::2::978824291", "3::2::5::978302268"]


def _ml1m(d, ratings=RATINGS, users=USERS, movies=MOVIES, gz=False):
  d.mkdir(exist_ok=True)
  (d / "users.dat").write_bytes(("\n".join(users) + "\n").encode("latin-1"))
  (d / "movies.dat").write_bytes(("\n".join(movies) + "\n").encode("latin-1"))
  data = ("\n".join(ratings) + "\n").encode("latin-1")
  if gz:
    (d / "ratings.dat.gz").write_bytes(gzip.compress(data))
  else:
    (d / "ratings.dat").write_bytes(data)
  return d


def test_clean_ml1m_reads_exactly(tmp_path):
  t = movielens.load_ml1m(str(_ml1m(tmp_path / "ok")))
  np.testing.assert_array_equal(t.rating, [5, 3, 4, 1, 2, 5])
  assert t.timestamp[0] == 978300760 and "warnings" not in t.info


def test_missing_then_extra_field_is_an_error_not_a_shift(tmp_path):
  # Line 2 lacks the rating, line 3 has one field too many: the token count
  # matches 6 x 4, so the old fast path read rating 978302109, timestamp 2.
  rows = list(RATINGS)
  rows[1] = "1::2::978302109"
  rows[2] = "2::1::4::978301968::7"
  d = _ml1m(tmp_path / "shift", rows)
  with pytest.raises(rawio.DataError,
                     match=r"ratings.dat:2: expected 4 fields .* got 3"):
    movielens.load_ml1m(str(d))
  # The same in a gzipped file, and with an empty field instead.
  rows[1], rows[2] = "1::::3::978302109", RATINGS[2]
  d = _ml1m(tmp_path / "empty", rows, gz=True)
  with pytest.raises(rawio.DataError, match=r"ratings.dat.gz:2: field 2 ''"
                     r" is not an integer"):
    movielens.load_ml1m(str(d))


@pytest.mark.parametrize("bad,match", [
    ("1::2::0::978302109", r"ratings.dat:2: rating 0 outside 1..5"),
    ("1::2::7::978302109", r"ratings.dat:2: rating 7 outside 1..5"),
    ("1::2::-1::978302109", r"ratings.dat:2: rating -1 outside 1..5"),
    ("1::2::3::0", r"ratings.dat:2: timestamp 0 outside 1.."),
    ("1::2::3::-5", r"ratings.dat:2: timestamp -5 outside 1.."),
    ("0::2::3::978302109", r"ratings.dat:2: user id 0 outside 1.."),
    ("1::0::3::978302109", r"ratings.dat:2: movie id 0 outside 1.."),
    ("1::2::3::99999999999999999999", r"ratings.dat:2: field 4 "
     r"'99999999999999999999' is too large"),
    ("1::2::3.5::978302109", r"ratings.dat:2: field 3 '3.5' is not an "
     "integer"),
    ("1::2:: 3::978302109", r"ratings.dat:2: field 3 ' 3' is not an "
     "integer"),
    ("1::2::3::978_302_109", r"ratings.dat:2: field 4 '978_302_109' is not"),
])
def test_ml1m_values_out_of_range(tmp_path, bad, match):
  rows = list(RATINGS)
  rows[1] = bad
  with pytest.raises(rawio.DataError, match=match):
    movielens.load_ml1m(str(_ml1m(tmp_path, rows)))


def test_ml1m_metadata_files(tmp_path):
  users = list(USERS)
  users[1] = "2::M::56::16"  # a missing zip code
  with pytest.raises(rawio.DataError, match=r"users.dat:2: expected 5"):
    movielens.load_ml1m(str(_ml1m(tmp_path / "a", users=users)))
  users[1] = "0::M::56::16::70072"
  with pytest.raises(rawio.DataError, match=r"users.dat:2: UserID 0 outside"):
    movielens.load_ml1m(str(_ml1m(tmp_path / "b", users=users)))
  movies = ["", "1::Toy Story (1995)::Animation", "x2::Jumanji::Adventure"]
  with pytest.raises(rawio.DataError, match=r"movies.dat:3: MovieID 'x2' is "
                     "not an integer"):
    movielens.load_ml1m(str(_ml1m(tmp_path / "c", movies=movies)))
  rows = list(RATINGS) + ["9::1::4::978300760"]
  with pytest.raises(rawio.DataError, match=r"ratings.dat:7: user 9 is not in"
                     " the user table"):
    movielens.load_ml1m(str(_ml1m(tmp_path / "d", rows)))


def test_truncated_gzip_names_the_file(tmp_path):
  d = _ml1m(tmp_path, gz=True)
  blob = (d / "ratings.dat.gz").read_bytes()
  (d / "ratings.dat.gz").write_bytes(blob[:len(blob) // 2])
  with pytest.raises(rawio.DataError, match=r"ratings.dat.gz: truncated or "
                     "corrupt gzip"):
    movielens.load_ml1m(str(d))


def _ml100k(d, data=None, users=None, items=None):
  d.mkdir(exist_ok=True)
  users = users or ["1|24|M|technician|85711", "2|53|F|other|94043"]
  flags = "|".join(["0"] * 19)
  items = items or [f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags}",
                    f"2|GoldenEye (1995)|01-Jan-1995||http://y|{flags}"]
  data = data or ["1\t1\t5\t874965758", "1\t2\t3\t876893171",
                  "2\t1\t4\t878542960", "2\t2\t1\t876893119"]
  for name, lines in (("u.user", users), ("u.item", items), ("u.data", data)):
    (d / name).write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
  return d


def test_ml100k_rows_and_ranges(tmp_path):
  t = movielens.load_ml100k(str(_ml100k(tmp_path / "ok")))
  np.testing.assert_array_equal(t.rating, [5, 3, 4, 1])
  shifted = ["1\t1\t5\t874965758", "1\t2\t876893171",
             "2\t1\t4\t878542960\t9", "2\t2\t1\t876893119"]
  with pytest.raises(rawio.DataError, match=r"u.data:2: expected 4 fields"):
    movielens.load_ml100k(str(_ml100k(tmp_path / "a", data=shifted)))
  for bad, match in (("1\t2\t6\t876893171", r"u.data:2: rating 6 outside"),
                     ("1\t2\t0\t876893171", r"u.data:2: rating 0 outside"),
                     ("1\t2\t3\t-1", r"u.data:2: timestamp -1 outside")):
    data = ["1\t1\t5\t874965758", bad]
    with pytest.raises(rawio.DataError, match=match):
      movielens.load_ml100k(str(_ml100k(tmp_path / "b", data=data)))
  users = ["1|24|M|technician|85711", "2|53|F|other"]
  with pytest.raises(rawio.DataError, match=r"u.user:2: expected 5 fields"):
    movielens.load_ml100k(str(_ml100k(tmp_path / "c", users=users)))
  users = ["1|24|M|technician|85711", "2|-3|F|other|94043"]
  with pytest.raises(rawio.DataError, match=r"u.user:2: age -3 outside 1.."):
    movielens.load_ml100k(str(_ml100k(tmp_path / "d", users=users)))
  items = ["1|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(["0"] * 18)]
  with pytest.raises(rawio.DataError, match=r"u.item:1: expected 24 fields"):
    movielens.load_ml100k(str(_ml100k(tmp_path / "e", items=items)))


def test_fast_and_line_parsers_agree():
  rng = np.random.default_rng(0)
  table = rng.integers(1, 10**10, (50, 4))
  text = "\n".join("::".join(map(str, r)) for r in table) + "\n\n"
  fast = rawparse._numeric_fast  # pylint: disable=protected-access
  np.testing.assert_array_equal(fast(text.encode(), "::", 4, "latin-1"),
                                table)
  # Anything unusual is left to the line parser (None), never misread.
  for bad in ("1::2::3\n4::5::6::7::8\n", "1::2::::4\n", "1::2::3::4\n\n5::6"
              "::7::8\n", "1::2::3:: 4\n", "1::2::3::1234567890123456\n"):
    assert fast(bad.encode(), "::", 4, "latin-1") is None, bad


def _csv_cfg(tmp_path, text, **kw):
  (tmp_path / "t.csv").write_text(text)
  cfg = data_config.get_data_config("csv")
  cfg.data_dir = str(tmp_path)
  cfg.csv.path, cfg.csv.fields = "t.csv", ("user", "item")
  cfg.csv.rating_column, cfg.csv.timestamp_column = "stars", "when"
  cfg.csv.update(kw)
  return cfg


def test_csv_rows_have_exactly_their_fields(tmp_path):
  good = "user,item,stars,when\nu1,i1,5,100\nu2,i2,3,200\n"
  t = sources.load_raw(_csv_cfg(tmp_path, good), str(tmp_path))
  assert t.num_rows == 2 and list(t.timestamp) == [100, 200]
  short = "user,item,stars,when\nu1,i1,5\nu2,i2,3,200,9\n"
  with pytest.raises(rawio.DataError, match=r"t.csv:2: expected 4 fields"):
    sources.load_raw(_csv_cfg(tmp_path, short), str(tmp_path))
  only_short = "user,item,stars,when\nu1,i1,5,100\nu2,i2,3\n"
  with pytest.raises(rawio.DataError, match=r"t.csv:3: expected 4 fields"):
    sources.load_raw(_csv_cfg(tmp_path, only_short), str(tmp_path))
  # A quoted field spanning two lines: the next record's line is exact.
  quoted = 'user,item,stars,when\n"u\n1",i1,5,100\nu2,i2,x,200\n'
  with pytest.raises(rawio.DataError, match=r"t.csv:4: stars 'x' is not a "
                     "number"):
    sources.load_raw(_csv_cfg(tmp_path, quoted), str(tmp_path))
  negative = "user,item,stars,when\nu1,i1,5,100\nu2,i2,3,-7\n"
  with pytest.raises(rawio.DataError, match=r"t.csv:3: timestamp '-7' is "
                     "not a positive time"):
    sources.load_raw(_csv_cfg(tmp_path, negative), str(tmp_path))
  multi = "user::item::stars::when\nu1::i1::5::100\nu2::i2::3\n"
  with pytest.raises(rawio.DataError, match=r"t.csv:3: expected 4 fields"):
    sources.load_raw(_csv_cfg(tmp_path, multi, sep="::"), str(tmp_path))


def test_csv_parquet_rows_named(tmp_path):
  pd.DataFrame({"user": ["a", "b"], "item": ["x", "y"], "stars": [4, 5],
                "when": [10, 0]}).to_parquet(tmp_path / "t.parquet")
  cfg = _csv_cfg(tmp_path, "")
  cfg.csv.path = "t.parquet"
  with pytest.raises(rawio.DataError, match=r"t.parquet: row 2: timestamp 0"):
    sources.load_raw(cfg, str(tmp_path))


BX_BOOKS = ('"ISBN";"Book-Title";"Book-Author";"Year-Of-Publication";'
            '"Publisher";"Image-URL-S";"Image-URL-M";"Image-URL-L"\n'
            '"0001";"A";"B";"1999";"P";"s";"m";"l"\n')


def _bx(d, ratings):
  d.mkdir(exist_ok=True)
  (d / "BX-Users.csv").write_bytes(b'"User-ID";"Location";"Age"\n'
                                   b'"1";"x, y";"20"\n')
  (d / "BX-Books.csv").write_bytes(BX_BOOKS.encode("latin-1"))
  (d / "BX-Book-Ratings.csv").write_bytes(
      ('"User-ID";"ISBN";"Book-Rating"\n' + "\n".join(ratings) + "\n"
       ).encode("latin-1"))
  return str(d)


@pytest.mark.parametrize("bad,match", [
    ('"1";"0001";"11"', r"BX-Book-Ratings.csv:3: rating '11' outside 0..10"),
    ('"1";"0001";"-1"', r"BX-Book-Ratings.csv:3: rating '-1' outside"),
    ('"1";"0001";"4.5"', r"BX-Book-Ratings.csv:3: rating '4.5' outside"),
    ('"x1";"0001";"4"', r"BX-Book-Ratings.csv:3: User-ID 'x1' is not a "
     "positive integer"),
    ('"1";"0001"', r"BX-Book-Ratings.csv:3: expected 3 fields"),
])
def test_bookcrossing_rows(tmp_path, bad, match):
  d = _bx(tmp_path, ['"1";"0001";"8"', bad])
  with pytest.raises(rawio.DataError, match=match):
    books.load_bookcrossing(d, drop_zero_ratings=True)


def _goodreads(d, inter):
  d.mkdir(exist_ok=True)
  with gzip.open(d / "goodreads_books_x.json.gz", "wt") as f:
    f.write(json.dumps({"book_id": "1", "title": "T"}) + "\n")
  with gzip.open(d / "goodreads_interactions_x.json.gz", "wt") as f:
    for r in inter:
      f.write(json.dumps(r) + "\n")
  return str(d)


def test_goodreads_rows(tmp_path):
  ok = {"user_id": "u", "book_id": "1", "rating": 4}
  for bad, match in (({**ok, "rating": 7}, r"json.gz:2: rating 7 outside"),
                     ({**ok, "rating": -1}, r"json.gz:2: rating -1 outside"),
                     ({"user_id": "u", "rating": 3}, r"json.gz:2: needs "),
                     ({**ok, "user_id": ""}, r"json.gz:2: empty user_id")):
    d = _goodreads(tmp_path / str(len(match)), [ok, bad])
    with pytest.raises(rawio.DataError, match=match):
      books.load_goodreads(d, drop_zero_ratings=True)
  d = _goodreads(tmp_path / "trunc", [ok] * 200)
  path = tmp_path / "trunc" / "goodreads_interactions_x.json.gz"
  path.write_bytes(path.read_bytes()[:60])
  with pytest.raises(rawio.DataError, match=r"interactions_x.json.gz \(after "
                     r"line \d+\): truncated or corrupt gzip"):
    books.load_goodreads(d, drop_zero_ratings=True)
