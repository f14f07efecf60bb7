"""BookCrossing and GoodReads (UCSD Book Graph) readers.

BookCrossing: `BX-Book-Ratings.csv`, `BX-Users.csv`, `BX-Books.csv`
(`;`-separated, double-quoted, latin-1). The release's BX-Books.csv has
malformed lines (unescaped quotes, wrong field counts); those are skipped with
a counted warning naming file and line. The other two files must be clean.
Ratings join their user and book rows; ratings whose user or book has no
metadata row are dropped (counted in `info`). No timestamp.

GoodReads: `goodreads_interactions*.json.gz` plus `goodreads_books*.json.gz`
(and, when present, `goodreads_book_genres_initial.json.gz` and
`goodreads_book_authors.json.gz`). The 15 fields of FLIP.md 2.2 are produced as
far as the metadata has them: a field whose source is absent from every book
record is left out (recorded in `info['missing_fields']`).
"""
from __future__ import annotations

import datetime
import glob
import os

import numpy as np

from flip_jax.data import rawio

BX_FIELDS = ("user_id", "location", "age", "isbn", "book_title", "author",
             "publication_year", "publisher")
BX_DISPLAY = ("User ID", "Location", "Age", "ISBN", "Book title", "Author",
              "Publication year", "Publisher")
BX_RATINGS_HEADER = ("User-ID", "ISBN", "Book-Rating")
BX_USERS_HEADER = ("User-ID", "Location", "Age")
BX_BOOKS_HEADER = ("ISBN", "Book-Title", "Book-Author", "Year-Of-Publication",
                   "Publisher", "Image-URL-S", "Image-URL-M", "Image-URL-L")
UNKNOWN = "unknown"


def _clean(v: str) -> str:
  v = " ".join(v.split())
  return v if v and v.upper() not in ("NULL", "NAN") else UNKNOWN


def load_bookcrossing(data_dir: str, drop_zero_ratings: bool
                      ) -> rawio.RawTable:
  """Reads the BookCrossing release.

  Args:
    data_dir: directory with the three BX-*.csv files.
    drop_zero_ratings: drop rating 0 (an implicit interaction, not a score).

  Returns:
    The RawTable with the 8 BookCrossing fields, in ratings-file order.
  """
  r_path, u_path, b_path = rawio.require_files(
      data_dir, ["BX-Book-Ratings.csv", "BX-Users.csv", "BX-Books.csv"])
  ratings, _ = rawio.quoted_csv(r_path, BX_RATINGS_HEADER, strict=True)
  users, _ = rawio.quoted_csv(u_path, BX_USERS_HEADER, strict=True)
  books, skipped = rawio.quoted_csv(b_path, BX_BOOKS_HEADER, strict=False)
  user_rows = {u[0].strip(): u for u in users}
  book_rows = {b[0].strip().upper(): b for b in books}
  cols = [[] for _ in BX_FIELDS]
  rating, dropped_meta, dropped_zero = [], 0, 0
  for i, (uid, isbn, score) in enumerate(ratings, start=2):
    try:
      s = float(score)
    except ValueError:
      raise rawio.DataError(f"{r_path}:{i}: rating {score!r} is not a number"
                            ) from None
    if not 0 <= s <= 10:
      raise rawio.DataError(f"{r_path}:{i}: rating {s} outside 0..10")
    if drop_zero_ratings and s == 0:
      dropped_zero += 1
      continue
    u = user_rows.get(uid.strip())
    b = book_rows.get(isbn.strip().upper())
    if u is None or b is None:
      dropped_meta += 1
      continue
    age = _clean(u[2])
    if age != UNKNOWN:
      try:
        age = str(int(float(age)))
      except ValueError:
        age = UNKNOWN
    row = (uid.strip(), _clean(u[1]), age, isbn.strip().upper(), _clean(b[1]),
           _clean(b[2]), _clean(b[3]), _clean(b[4]))
    for c, v in zip(cols, row):
      c.append(v)
    rating.append(s)
  keys = [rawio.obj(c) for c in cols]
  return rawio.RawTable(
      name="bookcrossing", field_names=BX_FIELDS, display_names=BX_DISPLAY,
      keys=keys, values=[k.copy() for k in keys],
      rating=np.asarray(rating, np.float64), timestamp=None,
      info={"skipped_malformed_lines": {os.path.basename(b_path): skipped},
            "dropped_missing_metadata": dropped_meta,
            "dropped_zero_ratings": dropped_zero})


# GoodReads: (field, display name, source) in FLIP.md 2.2 order.
GR_FIELDS = (
    ("user_id", "User ID", "interaction:user_id"),
    ("book_id", "Book ID", "interaction:book_id"),
    ("book_title", "Book title", "book:title"),
    ("book_genres", "Book genres", "genres"),
    ("average_rating", "Average rating", "book:average_rating"),
    ("num_reviews", "Number of book reviews", "book:text_reviews_count"),
    ("author_id", "Author ID", "book:author_id"),
    ("author_name", "Author name", "authors"),
    ("num_pages", "Number of pages", "book:num_pages"),
    ("is_ebook", "eBook flag", "book:is_ebook"),
    ("format", "Format", "book:format"),
    ("publisher", "Publisher", "book:publisher"),
    ("publication_year", "Publication year", "book:publication_year"),
    ("work_id", "Work ID", "book:work_id"),
    ("media_type", "Media type", "book:media_type"),
)
_DATE_FORMAT = "%a %b %d %H:%M:%S %z %Y"


def _gr_file(data_dir: str, pattern: str, required: bool) -> str | None:
  found = sorted(glob.glob(os.path.join(data_dir, pattern)))
  if not found:
    if required:
      raise rawio.DataError(
          f"{data_dir}: missing {pattern} (expected goodreads_interactions*."
          "json.gz and goodreads_books*.json.gz; optional goodreads_book_"
          "genres_initial.json.gz, goodreads_book_authors.json.gz)")
    return None
  if len(found) > 1:
    raise rawio.DataError(f"{data_dir}: several files match {pattern}: "
                          f"{[os.path.basename(f) for f in found]}; keep one")
  return found[0]


def _parse_time(path, lineno, rec) -> int | None:
  for key in ("date_added", "read_at"):
    v = rec.get(key)
    if v:
      try:
        return int(datetime.datetime.strptime(v, _DATE_FORMAT).timestamp())
      except ValueError:
        raise rawio.DataError(f"{path}:{lineno}: {key} {v!r} does not match "
                              f"{_DATE_FORMAT!r}") from None
  return None


def load_goodreads(data_dir: str, drop_zero_ratings: bool) -> rawio.RawTable:
  """Reads UCSD Book Graph GoodReads files (see module docstring).

  Args:
    data_dir: directory with the JSON-lines files.
    drop_zero_ratings: drop rating 0 (shelved but not rated).

  Returns:
    The RawTable; timestamps from date_added (else read_at) when every kept
    interaction has one, otherwise None (seeded random split).
  """
  inter_path = _gr_file(data_dir, "goodreads_interactions*.json*", True)
  books_path = _gr_file(data_dir, "goodreads_books*.json*", True)
  genres_path = _gr_file(data_dir, "goodreads_book_genres*.json*", False)
  authors_path = _gr_file(data_dir, "goodreads_book_authors*.json*", False)
  books, seen_keys = {}, set()
  for _, rec in rawio.iter_json_lines(books_path):
    seen_keys.update(k for k, v in rec.items() if v not in ("", None, []))
    authors = rec.get("authors") or []
    rec["author_id"] = str(authors[0].get("author_id", "")) if authors else ""
    books[str(rec.get("book_id"))] = rec
  genres = {}
  if genres_path:
    for _, rec in rawio.iter_json_lines(genres_path):
      g = rec.get("genres") or {}
      genres[str(rec.get("book_id"))] = (
          max(sorted(g), key=lambda k: g[k]) if g else "")
  author_names = {}
  if authors_path:
    for _, rec in rawio.iter_json_lines(authors_path):
      author_names[str(rec.get("author_id"))] = rec.get("name", "")
  present = []
  for name, display, source in GR_FIELDS:
    kind, _, key = source.partition(":")
    ok = (kind == "interaction" or (kind == "genres" and genres_path)
          or (kind == "authors" and authors_path)
          or (kind == "book" and (key in seen_keys or (
              key == "author_id" and "authors" in seen_keys))))
    if ok:
      present.append((name, display, source))
  cols = [[] for _ in present]
  rating, times, dropped_meta, dropped_zero = [], [], 0, 0
  for lineno, rec in rawio.iter_json_lines(inter_path):
    try:
      s = float(rec["rating"])
      uid, bid = str(rec["user_id"]), str(rec["book_id"])
    except (KeyError, TypeError, ValueError):
      raise rawio.DataError(f"{inter_path}:{lineno}: needs user_id, book_id "
                            "and a numeric rating") from None
    if drop_zero_ratings and s == 0:
      dropped_zero += 1
      continue
    book = books.get(bid)
    if book is None:
      dropped_meta += 1
      continue
    for c, (_, _, source) in zip(cols, present):
      kind, _, key = source.partition(":")
      if kind == "interaction":
        v = uid if key == "user_id" else bid
      elif kind == "genres":
        v = genres.get(bid, "")
      elif kind == "authors":
        v = author_names.get(book["author_id"], "")
      else:
        v = book.get(key, "")
      c.append(_clean(str(v).replace(",", ", ")) if kind == "genres"
               else _clean(str(v) if v is not None else ""))
    rating.append(s)
    times.append(_parse_time(inter_path, lineno, rec))
  keys = [rawio.obj(c) for c in cols]
  has_time = bool(times) and all(t is not None for t in times)
  return rawio.RawTable(
      name="goodreads", field_names=tuple(p[0] for p in present),
      display_names=tuple(p[1] for p in present), keys=keys,
      values=[k.copy() for k in keys],
      rating=np.asarray(rating, np.float64),
      timestamp=np.asarray(times, np.int64) if has_time else None,
      info={"missing_fields": [f[0] for f in GR_FIELDS if f not in present],
            "dropped_missing_metadata": dropped_meta,
            "dropped_zero_ratings": dropped_zero})
