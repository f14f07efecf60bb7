"""BookCrossing, GoodReads and generic CSV/parquet readers on tiny files."""
import gzip
import json
import logging

import numpy as np
import pandas as pd
import pytest

from experiments.configs import data as data_config
from flip_jax.data import books
from flip_jax.data import prepare
from flip_jax.data import rawio
from flip_jax.data import sources

BOOKS_HEADER = ('"ISBN";"Book-Title";"Book-Author";"Year-Of-Publication";'
                '"Publisher";"Image-URL-S";"Image-URL-M";"Image-URL-L"')


def _write_bx(d, n=120, bad_ratings=False):
  users = ['"User-ID";"Location";"Age"']
  for u in range(1, 13):
    age = "NULL" if u % 4 == 0 else f'"{20 + u}"'
    users.append(f'"{u}";"city{u}, state, usa";{age}')
  bks = [BOOKS_HEADER]
  for b in range(10):
    bks.append(f'"00000000{b:02d}";"Book number {b}";"Author {b % 3}";'
               f'"{1990 + b}";"Publisher {b % 2}";"s";"m";"l"')
  bks.insert(3, '"0000000099";"Bad "quoted" title";"A";"1999";"P";"s";"m";"l"')
  bks.insert(5, '"0000000098";"Too";"many";"1999";"P";"s";"m";"l";"x"')
  ratings = ['"User-ID";"ISBN";"Book-Rating"']
  rng = np.random.default_rng(0)
  for i in range(n):
    user, book = rng.integers(1, 13), rng.integers(0, 10)
    ratings.append(f'"{user}";"00000000{book:02d}";"{rng.integers(0, 11)}"')
  ratings.append('"5";"0000000777";"7"')  # book without metadata
  if bad_ratings:
    ratings.insert(4, '"1";"0000000001";"4";"oops"')
  for name, lines in (("BX-Users.csv", users), ("BX-Books.csv", bks),
                      ("BX-Book-Ratings.csv", ratings)):
    (d / name).write_bytes(("\n".join(lines) + "\n").encode("latin-1"))


def test_bookcrossing(tmp_path, caplog):
  _write_bx(tmp_path)
  with caplog.at_level(logging.WARNING):
    t = books.load_bookcrossing(str(tmp_path), drop_zero_ratings=True)
  assert "BX-Books.csv:4: malformed CSV line" in caplog.text
  assert "BX-Books.csv:6: expected 8 fields, got 9" in caplog.text
  assert "skipped 2 malformed line(s)" in caplog.text
  assert t.field_names == books.BX_FIELDS
  assert t.info["skipped_malformed_lines"] == {"BX-Books.csv": 2}
  assert t.info["dropped_missing_metadata"] == 1
  assert t.info["dropped_zero_ratings"] > 0
  assert (t.rating > 0).all() and t.timestamp is None
  assert set(t.values[2]) >= {"unknown"}  # NULL age
  assert "0000000099" not in set(t.keys[3])
  cfg = data_config.get_data_config("bookcrossing")
  cfg.data_dir = str(tmp_path)
  p = prepare.load_dataset(cfg, str(tmp_path / "cache"))
  assert p.stats["label_rule"] == "rating >= 5"
  assert "random permutation" in p.stats["row_order"]
  assert p.splits["train"]["text"][0].startswith("User ID is ")
  assert " Publication year is 19" in p.splits["train"]["text"][0]


def test_bookcrossing_malformed_clean_file_is_an_error(tmp_path):
  _write_bx(tmp_path, bad_ratings=True)
  with pytest.raises(rawio.DataError, match=r"BX-Book-Ratings.csv:5: expected"
                     r" 3 fields"):
    books.load_bookcrossing(str(tmp_path), drop_zero_ratings=True)


def test_bookcrossing_missing_files(tmp_path):
  (tmp_path / "BX-Users.csv").write_text("x")
  with pytest.raises(rawio.DataError,
                     match="missing BX-Book-Ratings.csv, BX-Books.csv"):
    books.load_bookcrossing(str(tmp_path), drop_zero_ratings=True)


def _gz_lines(path, records):
  with gzip.open(path, "wt", encoding="utf-8") as f:
    for r in records:
      f.write(json.dumps(r) + "\n")


def test_goodreads(tmp_path):
  bks = [{"book_id": str(b), "title": f"Title {b}", "authors": [
      {"author_id": str(100 + b % 3), "role": ""}], "average_rating": "3.9",
          "text_reviews_count": str(b * 7), "num_pages": str(100 + b),
          "is_ebook": "false", "format": "Paperback", "publisher": "Pub",
          "publication_year": str(2000 + b), "work_id": str(500 + b)}
         for b in range(8)]
  _gz_lines(tmp_path / "goodreads_books_poetry.json.gz", bks)
  _gz_lines(tmp_path / "goodreads_book_genres_initial.json.gz",
            [{"book_id": str(b), "genres": {"poetry": 5, "fiction": b % 5}}
             for b in range(8)])
  rng = np.random.default_rng(0)
  inter = [{"user_id": f"u{rng.integers(0, 9)}", "book_id": str(
      rng.integers(0, 8)), "rating": int(rng.integers(0, 6)),
            "date_added": f"Thu Dec {1 + i % 28:02d} 11:34:18 -0800 "
                          f"{2010 + i // 28}"} for i in range(150)]
  _gz_lines(tmp_path / "goodreads_interactions_poetry.json.gz", inter)
  t = books.load_goodreads(str(tmp_path), drop_zero_ratings=True)
  assert t.info["missing_fields"] == ["author_name", "media_type"]
  assert len(t.field_names) == 13 and t.display_names[:3] == (
      "User ID", "Book ID", "Book title")
  assert t.timestamp is not None and (t.rating > 0).all()
  cfg = data_config.get_data_config("goodreads")
  assert cfg.max_length == 180
  cfg.data_dir = str(tmp_path)
  p = prepare.load_dataset(cfg, str(tmp_path / "cache"))
  assert "timestamp" in p.stats["row_order"]
  assert "Book genres is poetry." in p.splits["train"]["text"][0]


def test_csv_and_parquet(tmp_path):
  rng = np.random.default_rng(0)
  frame = pd.DataFrame({
      "user": [f"u{x}" for x in rng.integers(0, 20, 200)],
      "item": [f"i{x}" for x in rng.integers(0, 30, 200)],
      "stars": rng.integers(1, 6, 200), "when": rng.integers(0, 10**6, 200),
      "clicked": rng.integers(0, 2, 200)})
  frame.to_csv(tmp_path / "inter.csv", index=False)
  frame.to_parquet(tmp_path / "inter.parquet")
  cfg = data_config.get_data_config("csv")
  cfg.data_dir = str(tmp_path)
  cfg.csv.path, cfg.csv.fields = "inter.csv", ("user", "item")
  cfg.csv.display_names = ("User", "Item")
  cfg.csv.rating_column, cfg.csv.timestamp_column = "stars", "when"
  cfg.label_threshold = 4.0
  p = prepare.load_dataset(cfg, str(tmp_path / "c"))
  assert p.stats["label_rule"] == "rating >= 4"
  assert p.splits["train"]["text"][0].startswith("User is u")
  assert (np.diff(np.concatenate([p.splits[s]["timestamp"] for s in (
      "train", "valid", "test")])) >= 0).all()
  cfg.csv.path, cfg.csv.rating_column = "inter.parquet", ""
  cfg.csv.label_column, cfg.csv.timestamp_column = "clicked", ""
  q = prepare.load_dataset(cfg, str(tmp_path / "c"))
  assert "column clicked" in q.stats["label_rule"]
  assert q.stats["rows"] == 200
  cfg.csv.fields = ("user", "nope")
  with pytest.raises(rawio.DataError, match=r"missing column\(s\) \['nope'\]"):
    sources.load_raw(cfg, str(tmp_path))
