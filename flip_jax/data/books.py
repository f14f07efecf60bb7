"""BookCrossing and GoodReads (UCSD Book Graph) readers.

BookCrossing: `BX-Book-Ratings.csv`, `BX-Users.csv`, `BX-Books.csv`
(`;`-separated, double-quoted, latin-1). The release's BX-Books.csv has
malformed lines (unescaped quotes, wrong field counts); those are skipped with
a counted warning naming file and line. The other two files must be clean:
exact field counts, User-IDs positive integers, ratings whole numbers in
0..10 (an error names file:line). A repeated user or ISBN row: the first
wins, counted as a warning (`RawTable.info['warnings']`), as are repeated
(user, ISBN) rating rows (kept) and UTF-8 text in these latin-1 files.
Ratings join their user and book rows; ratings whose user or book has no
metadata row are dropped (counted in `info`). No timestamp.

GoodReads: `goodreads_interactions*.json.gz` plus `goodreads_books*.json.gz`
(and, when present, `goodreads_book_genres_initial.json.gz` and
`goodreads_book_authors.json.gz`). The 15 fields of FLIP.md 2.2 are produced as
far as the metadata has them: a field whose source is absent from every book
record is left out (recorded in `info['missing_fields']`). Ratings must be
whole numbers in 0..5 and dates after 1970 (an error names file:line); a
repeated book_id (the first record wins) and repeated (user, book) ratings
(kept) are counted warnings.
"""
from __future__ import annotations

import datetime
import glob
import os

import numpy as np

from flip_jax.data import rawio
from flip_jax.data import rawparse

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
  info: dict = {}
  ratings, _ = rawparse.quoted_csv(r_path, BX_RATINGS_HEADER, strict=True,
                                info=info)
  users, _ = rawparse.quoted_csv(u_path, BX_USERS_HEADER, strict=True,
                              info=info)
  books, skipped = rawparse.quoted_csv(b_path, BX_BOOKS_HEADER, strict=False,
                                    info=info)
  for line, u in zip(users.lines, users):
    _check_user_id(u_path, line, u[0])
  # A repeated id: the first row wins (as in the MovieLens readers).
  rawio.warn_duplicate_ids(info, u_path, "user", users,
                           lambda u: u[0].strip(), users.lines)
  rawio.warn_duplicate_ids(info, b_path, "book", books,
                           lambda b: b[0].strip().upper(), books.lines)
  user_rows, book_rows = {}, {}
  for u in users:
    user_rows.setdefault(u[0].strip(), u)
  for b in books:
    book_rows.setdefault(b[0].strip().upper(), b)
  cols = [[] for _ in BX_FIELDS]
  rating, dropped_meta, dropped_zero = [], 0, 0
  pairs = []
  for i, (uid, isbn, score) in zip(ratings.lines, ratings):
    _check_user_id(r_path, i, uid)
    try:
      s = float(score)
    except ValueError:
      raise rawio.DataError(f"{r_path}:{i}: rating {score!r} is not a number"
                            ) from None
    if not (0 <= s <= 10 and s == int(s)):
      raise rawio.DataError(f"{r_path}:{i}: rating {score!r} outside 0..10 "
                            "(whole numbers)")
    pairs.append((uid.strip(), isbn.strip().upper()))
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
  _warn_duplicate_pairs(info, r_path, pairs, "(User-ID, ISBN)")
  keys = [rawparse.obj(c) for c in cols]
  info.update({"skipped_malformed_lines": {os.path.basename(b_path): skipped},
               "dropped_missing_metadata": dropped_meta,
               "dropped_zero_ratings": dropped_zero})
  return rawio.RawTable(
      name="bookcrossing", field_names=BX_FIELDS, display_names=BX_DISPLAY,
      keys=keys, values=[k.copy() for k in keys],
      rating=np.asarray(rating, np.float64), timestamp=None, info=info)


def _check_user_id(path: str, line: int, uid: str) -> None:
  """BookCrossing User-IDs are positive integers (the release's README)."""
  u = uid.strip()
  if not (u.isascii() and u.isdigit() and int(u) > 0):
    raise rawio.DataError(f"{path}:{line}: User-ID {uid!r} is not a positive "
                          "integer")


def _warn_duplicate_pairs(info: dict, path: str, pairs: list, what: str
                          ) -> None:
  """Rating rows repeating an earlier (user, item) pair (kept, counted)."""
  if pairs:
    _, codes = rawparse.factorize([f"{u}\x00{b}" for u, b in pairs])
    rawio.warn_duplicate_pairs(info, path, codes, what=what)


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
        t = int(datetime.datetime.strptime(v, _DATE_FORMAT).timestamp())
      except (ValueError, TypeError):
        raise rawio.DataError(f"{path}:{lineno}: {key} {v!r} does not match "
                              f"{_DATE_FORMAT!r}") from None
      if t <= 0:
        raise rawio.DataError(f"{path}:{lineno}: {key} {v!r} is not after "
                              "1970 (timestamps must be positive)")
      return t
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
  info: dict = {}
  books, seen_keys = {}, set()
  repeated, differing, example = 0, 0, None
  for lineno, rec in rawparse.iter_json_lines(books_path):
    if rec.get("book_id") in ("", None):
      raise rawio.DataError(f"{books_path}:{lineno}: record has no book_id")
    seen_keys.update(k for k, v in rec.items() if v not in ("", None, []))
    authors = rec.get("authors") or []
    rec["author_id"] = str(authors[0].get("author_id", "")) if authors else ""
    bid = str(rec.get("book_id"))
    if bid in books:  # the first record wins
      repeated += 1
      if books[bid][0] != rec:
        differing += 1
        example = example or (bid, books[bid][1], lineno)
    else:
      books[bid] = (rec, lineno)
  if repeated:
    rawio.warn(info, "duplicate_book_ids", repeated,
               f"{books_path}: {repeated} record(s) repeat an earlier "
               f"book_id, {differing} of them with different content (the "
               "first record wins)" + (
                   f"; e.g. book_id {example[0]} at lines {example[1]} and "
                   f"{example[2]}" if example else ""))
  books = {k: v[0] for k, v in books.items()}
  genres = {}
  if genres_path:
    for _, rec in rawparse.iter_json_lines(genres_path):
      g = rec.get("genres") or {}
      genres[str(rec.get("book_id"))] = (
          max(sorted(g), key=lambda k: g[k]) if g else "")
  author_names = {}
  if authors_path:
    for _, rec in rawparse.iter_json_lines(authors_path):
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
  pairs = []
  for lineno, rec in rawparse.iter_json_lines(inter_path):
    try:
      s = float(rec["rating"])
      uid, bid = str(rec["user_id"]), str(rec["book_id"])
    except (KeyError, TypeError, ValueError):
      raise rawio.DataError(f"{inter_path}:{lineno}: needs user_id, book_id "
                            "and a numeric rating") from None
    if not (0 <= s <= 5 and s == int(s)):
      raise rawio.DataError(f"{inter_path}:{lineno}: rating {rec['rating']!r}"
                            " outside 0..5 (whole numbers)")
    if rec["user_id"] in ("", None) or rec["book_id"] in ("", None):
      raise rawio.DataError(f"{inter_path}:{lineno}: empty user_id or "
                            "book_id")
    pairs.append((uid, bid))
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
  _warn_duplicate_pairs(info, inter_path, pairs, "(user_id, book_id)")
  keys = [rawparse.obj(c) for c in cols]
  has_time = bool(times) and all(t is not None for t in times)
  return rawio.RawTable(
      name="goodreads", field_names=tuple(p[0] for p in present),
      display_names=tuple(p[1] for p in present), keys=keys,
      values=[k.copy() for k in keys],
      rating=np.asarray(rating, np.float64),
      timestamp=np.asarray(times, np.int64) if has_time else None,
      info={**info,
            "missing_fields": [f[0] for f in GR_FIELDS if f not in present],
            "dropped_missing_metadata": dropped_meta,
            "dropped_zero_ratings": dropped_zero})
