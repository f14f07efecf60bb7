"""MovieLens-1M and MovieLens-100K readers (raw GroupLens formats).

Both map onto FLIP's 8 MovieLens fields (FLIP.md 2.2): user_id, gender, age,
occupation, zipcode, movie_id, title, genre (the movie's first genre). The ID
view keeps the codes; the text view decodes them (FLIP.md 2.6).
"""
from __future__ import annotations

import numpy as np

from flip_jax.data import rawio
from flip_jax.data import rawparse

FIELD_NAMES = ("user_id", "gender", "age", "occupation", "zipcode",
               "movie_id", "title", "genre")
DISPLAY_NAMES = ("User ID", "Gender", "Age", "Job", "Zipcode", "Movie ID",
                 "Title", "Film genre")

GENDER_WORDS = {"F": "female", "M": "male"}
AGE_WORDS = {1: "under 18", 18: "18-24", 25: "25-34", 35: "35-44",
             45: "45-49", 50: "50-55", 56: "56+"}
# ML-1M README, "Occupation is chosen from the following choices".
OCCUPATION_WORDS = (
    "other", "academic/educator", "artist", "clerical/admin",
    "college/grad student", "customer service", "doctor/health care",
    "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
    "programmer", "retired", "sales/marketing", "scientist", "self-employed",
    "technician/engineer", "tradesman/craftsman", "unemployed", "writer")
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy",
    "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror",
    "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")


def age_bucket(age: int) -> int:
  """Maps an age in years onto the ML-1M age-bucket code."""
  for code in (56, 50, 45, 35, 25, 18):
    if age >= code:
      return code
  return 1


# Documented value ranges (GroupLens READMEs): whole-star ratings 1..5,
# positive ids, timestamps in seconds since the epoch (positive).
RATING_MIN, RATING_MAX = 1, 5


def _join(path: str, what: str, ids: np.ndarray, table_ids: np.ndarray
          ) -> np.ndarray:
  """Row positions of `ids` in `table_ids` (the first row of a repeated id);

  unknown ids are an error naming the ratings file and line.
  """
  order = np.argsort(table_ids, kind="stable")
  sorted_ids = table_ids[order]
  pos = np.searchsorted(sorted_ids, ids)
  pos = np.minimum(pos, len(sorted_ids) - 1)
  bad = sorted_ids[pos] != ids
  if bad.any():
    i = int(np.flatnonzero(bad)[0])
    raise rawio.DataError(f"{path}:{i + 1}: {what} {ids[i]} is not in the "
                          f"{what} table ({int(bad.sum())} such row(s))")
  return order[pos]


def check_ratings(path: str, ratings: np.ndarray, info: dict) -> None:
  """Ranges of `user::movie::rating::timestamp` rows, plus duplicate pairs.

  Raises:
    DataError: an id <= 0, a rating outside 1..5 or a timestamp <= 0,
      naming file:line (row i is line i + 1, see `rawparse.numeric_table`).
  """
  rawparse.check_range(path, ratings[:, 0], "user id", lo=1)
  rawparse.check_range(path, ratings[:, 1], "movie id", lo=1)
  rawparse.check_range(path, ratings[:, 2], "rating", lo=RATING_MIN,
                    hi=RATING_MAX)
  rawparse.check_range(path, ratings[:, 3], "timestamp", lo=1)
  pair = ratings[:, 0] * (int(ratings[:, 1].max()) + 1) + ratings[:, 1]
  rawio.warn_duplicate_pairs(info, path, pair, ratings, "(user, movie)")


def _assemble(name, users, movies, ratings, ratings_path, info):
  """Joins per-user and per-movie columns onto the ratings."""
  (u_id, u_cols), (m_id, m_cols) = users, movies
  check_ratings(ratings_path, ratings, info)
  ui = _join(ratings_path, "user", ratings[:, 0], u_id)
  mi = _join(ratings_path, "movie", ratings[:, 1], m_id)
  keys, values = [], []
  for col_keys, col_values in u_cols:
    keys.append(col_keys[ui])
    values.append(col_values[ui])
  for col_keys, col_values in m_cols:
    keys.append(col_keys[mi])
    values.append(col_values[mi])
  info["ratings_file"] = ratings_path
  return rawio.RawTable(
      name=name, field_names=FIELD_NAMES, display_names=DISPLAY_NAMES,
      keys=keys, values=values,
      rating=ratings[:, 2].astype(np.float64),
      timestamp=ratings[:, 3].astype(np.int64),
      info=info)


def _find(data_dir, candidates, info, kind, prefix_glob=None):
  """`rawio.find_file`, warning about files of the same kind left unread."""
  ignored = []
  path = rawio.find_file(data_dir, candidates, prefix_glob=prefix_glob,
                         ignored=ignored)
  if ignored:
    rawio.warn(info, f"ignored_{kind}_files", len(ignored),
               f"{data_dir}: reading {path}; also present and ignored: "
               f"{', '.join(ignored)}")
  return path


def load_ml1m(data_dir: str) -> rawio.RawTable:
  """Reads MovieLens-1M: users.dat, movies.dat and ratings*.dat[.gz].

  Args:
    data_dir: directory with the GroupLens files (`::`-separated, latin-1).

  Returns:
    The RawTable with the 8 MovieLens fields, in ratings-file order.
  """
  info: dict = {}
  users_path = _find(data_dir, ["users.dat", "users.dat.gz"], info, "users")
  movies_path = _find(data_dir, ["movies.dat", "movies.dat.gz"], info,
                      "movies")
  ratings_path = _find(data_dir, ["ratings.dat", "ratings.dat.gz"], info,
                       "ratings", prefix_glob="ratings*.dat")
  users = rawparse.split_lines(users_path, "::", 5, info=info)
  u_id = rawparse.parse_ints(users_path, users, 0, "UserID", lo=1)
  ages = rawparse.parse_ints(users_path, users, 2, "Age")
  occs = rawparse.parse_ints(users_path, users, 3, "Occupation")
  genders = [u[1] for u in users]
  for line, g, a, o in zip(users.lines, genders, ages, occs):
    if g not in GENDER_WORDS or int(a) not in AGE_WORDS or not 0 <= o <= 20:
      raise rawio.DataError(f"{users_path}:{line}: unknown gender/age/"
                            f"occupation code {g!r}/{a}/{o}")
  rawio.warn_duplicate_ids(info, users_path, "user", users, lambda u: u[0],
                           users.lines)
  u_cols = [
      (rawparse.obj(u[0] for u in users), rawparse.obj(u[0] for u in users)),
      (rawparse.obj(genders), rawparse.obj(GENDER_WORDS[g] for g in genders)),
      (rawparse.obj(str(a) for a in ages), rawparse.obj(AGE_WORDS[a] for a in ages)),
      (rawparse.obj(str(o) for o in occs),
       rawparse.obj(OCCUPATION_WORDS[o] for o in occs)),
      (rawparse.obj(u[4] for u in users), rawparse.obj(u[4] for u in users)),
  ]
  movies = rawparse.split_lines(movies_path, "::", 3, info=info)
  m_id = rawparse.parse_ints(movies_path, movies, 0, "MovieID", lo=1)
  rawio.warn_duplicate_ids(info, movies_path, "movie", movies,
                           lambda m: m[0], movies.lines)
  genre = [m[2].split("|")[0] for m in movies]
  m_cols = [
      (rawparse.obj(m[0] for m in movies), rawparse.obj(m[0] for m in movies)),
      (rawparse.obj(m[1] for m in movies), rawparse.obj(m[1] for m in movies)),
      (rawparse.obj(genre), rawparse.obj(genre)),
  ]
  ratings = rawparse.numeric_table(ratings_path, "::", 4)
  table = _assemble("ml-1m", (u_id, u_cols), (m_id, m_cols), ratings,
                    ratings_path, info)
  table.info.update(num_users=len(users), num_movies=len(movies))
  return table


def load_ml100k(data_dir: str) -> rawio.RawTable:
  """Reads MovieLens-100K (u.data, u.user, u.item) onto the 8 ML fields.

  Age is bucketised the ML-1M way for the text (the ID keeps the bucket
  code too); occupation strings are used as they are; genre is the first
  genre flag set (or 'unknown').
  """
  info: dict = {}
  data_path, user_path, item_path = rawio.require_files(
      data_dir, ["u.data", "u.user", "u.item"])
  users = rawparse.split_lines(user_path, "|", 5, info=info)
  u_id = rawparse.parse_ints(user_path, users, 0, "user id", lo=1)
  ages = rawparse.parse_ints(user_path, users, 1, "age", lo=1)
  buckets = [age_bucket(int(a)) for a in ages]
  for line, u in zip(users.lines, users):
    if u[2] not in GENDER_WORDS:
      raise rawio.DataError(f"{user_path}:{line}: unknown gender {u[2]!r}")
  rawio.warn_duplicate_ids(info, user_path, "user", users, lambda u: u[0],
                           users.lines)
  u_cols = [
      (rawparse.obj(u[0] for u in users), rawparse.obj(u[0] for u in users)),
      (rawparse.obj(u[2] for u in users),
       rawparse.obj(GENDER_WORDS[u[2]] for u in users)),
      (rawparse.obj(str(b) for b in buckets),
       rawparse.obj(AGE_WORDS[b] for b in buckets)),
      (rawparse.obj(u[3] for u in users), rawparse.obj(u[3] for u in users)),
      (rawparse.obj(u[4] for u in users), rawparse.obj(u[4] for u in users)),
  ]
  items = rawparse.split_lines(item_path, "|", 24, info=info)
  m_id = rawparse.parse_ints(item_path, items, 0, "movie id", lo=1)
  rawio.warn_duplicate_ids(info, item_path, "movie", items, lambda m: m[0],
                           items.lines)
  genre = []
  for line, it in zip(items.lines, items):
    flags = it[5:]
    if any(f not in ("0", "1") for f in flags):
      raise rawio.DataError(f"{item_path}:{line}: genre flags must be 0/1")
    genre.append(ML100K_GENRES[flags.index("1")] if "1" in flags
                 else "unknown")
  m_cols = [
      (rawparse.obj(it[0] for it in items), rawparse.obj(it[0] for it in items)),
      (rawparse.obj(it[1] for it in items), rawparse.obj(it[1] for it in items)),
      (rawparse.obj(genre), rawparse.obj(genre)),
  ]
  ratings = rawparse.numeric_table(data_path, "\t", 4)
  table = _assemble("ml-100k", (u_id, u_cols), (m_id, m_cols), ratings,
                    data_path, info)
  table.info.update(num_users=len(users), num_movies=len(items))
  return table
