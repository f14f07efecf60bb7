"""MovieLens-1M and MovieLens-100K readers (raw GroupLens formats).

Both map onto FLIP's 8 MovieLens fields (FLIP.md 2.2): user_id, gender, age,
occupation, zipcode, movie_id, title, genre (the movie's first genre). The ID
view keeps the codes; the text view decodes them (FLIP.md 2.6).
"""
from __future__ import annotations

import numpy as np

from flip_jax.data import rawio

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


def _join(path: str, what: str, ids: np.ndarray, table_ids: np.ndarray
          ) -> np.ndarray:
  """Row positions of `ids` in `table_ids`; unknown ids are an error."""
  order = np.argsort(table_ids, kind="stable")
  sorted_ids = table_ids[order]
  pos = np.searchsorted(sorted_ids, ids)
  pos = np.minimum(pos, len(sorted_ids) - 1)
  bad = sorted_ids[pos] != ids
  if bad.any():
    i = int(np.flatnonzero(bad)[0])
    raise rawio.DataError(f"{path}: data row {i + 1}: {what} {ids[i]} is not "
                          f"in the {what} table")
  return order[pos]


def _assemble(name, users, movies, ratings, ratings_path):
  """Joins per-user and per-movie columns onto the ratings."""
  (u_id, u_cols), (m_id, m_cols) = users, movies
  ui = _join(ratings_path, "user", ratings[:, 0], u_id)
  mi = _join(ratings_path, "movie", ratings[:, 1], m_id)
  keys, values = [], []
  for col_keys, col_values in u_cols:
    keys.append(col_keys[ui])
    values.append(col_values[ui])
  for col_keys, col_values in m_cols:
    keys.append(col_keys[mi])
    values.append(col_values[mi])
  return rawio.RawTable(
      name=name, field_names=FIELD_NAMES, display_names=DISPLAY_NAMES,
      keys=keys, values=values,
      rating=ratings[:, 2].astype(np.float64),
      timestamp=ratings[:, 3].astype(np.int64),
      info={"ratings_file": ratings_path})


def load_ml1m(data_dir: str) -> rawio.RawTable:
  """Reads MovieLens-1M: users.dat, movies.dat and ratings*.dat[.gz].

  Args:
    data_dir: directory with the GroupLens files (`::`-separated, latin-1).

  Returns:
    The RawTable with the 8 MovieLens fields, in ratings-file order.
  """
  users_path = rawio.find_file(data_dir, ["users.dat", "users.dat.gz"])
  movies_path = rawio.find_file(data_dir, ["movies.dat", "movies.dat.gz"])
  ratings_path = rawio.find_file(data_dir, ["ratings.dat", "ratings.dat.gz"],
                                 prefix_glob="ratings*.dat")
  users = rawio.split_lines(users_path, "::", 5)
  u_id = rawio.parse_ints(users_path, users, 0, "UserID")
  ages = rawio.parse_ints(users_path, users, 2, "Age")
  occs = rawio.parse_ints(users_path, users, 3, "Occupation")
  genders = [u[1] for u in users]
  for i, (g, a, o) in enumerate(zip(genders, ages, occs), start=1):
    if g not in GENDER_WORDS or int(a) not in AGE_WORDS or not 0 <= o <= 20:
      raise rawio.DataError(f"{users_path}:{i}: unknown gender/age/occupation "
                            f"code {g!r}/{a}/{o}")
  u_cols = [
      (rawio.obj(u[0] for u in users), rawio.obj(u[0] for u in users)),
      (rawio.obj(genders), rawio.obj(GENDER_WORDS[g] for g in genders)),
      (rawio.obj(str(a) for a in ages), rawio.obj(AGE_WORDS[a] for a in ages)),
      (rawio.obj(str(o) for o in occs),
       rawio.obj(OCCUPATION_WORDS[o] for o in occs)),
      (rawio.obj(u[4] for u in users), rawio.obj(u[4] for u in users)),
  ]
  movies = rawio.split_lines(movies_path, "::", 3)
  m_id = rawio.parse_ints(movies_path, movies, 0, "MovieID")
  genre = [m[2].split("|")[0] for m in movies]
  m_cols = [
      (rawio.obj(m[0] for m in movies), rawio.obj(m[0] for m in movies)),
      (rawio.obj(m[1] for m in movies), rawio.obj(m[1] for m in movies)),
      (rawio.obj(genre), rawio.obj(genre)),
  ]
  ratings = rawio.numeric_table(ratings_path, "::", 4)
  table = _assemble("ml-1m", (u_id, u_cols), (m_id, m_cols), ratings,
                    ratings_path)
  table.info.update(num_users=len(users), num_movies=len(movies))
  return table


def load_ml100k(data_dir: str) -> rawio.RawTable:
  """Reads MovieLens-100K (u.data, u.user, u.item) onto the 8 ML fields.

  Age is bucketised the ML-1M way for the text (the ID keeps the bucket
  code too); occupation strings are used as they are; genre is the first
  genre flag set (or 'unknown').
  """
  data_path, user_path, item_path = rawio.require_files(
      data_dir, ["u.data", "u.user", "u.item"])
  users = rawio.split_lines(user_path, "|", 5)
  u_id = rawio.parse_ints(user_path, users, 0, "user id")
  ages = rawio.parse_ints(user_path, users, 1, "age")
  buckets = [age_bucket(int(a)) for a in ages]
  for i, u in enumerate(users, start=1):
    if u[2] not in GENDER_WORDS:
      raise rawio.DataError(f"{user_path}:{i}: unknown gender {u[2]!r}")
  u_cols = [
      (rawio.obj(u[0] for u in users), rawio.obj(u[0] for u in users)),
      (rawio.obj(u[2] for u in users),
       rawio.obj(GENDER_WORDS[u[2]] for u in users)),
      (rawio.obj(str(b) for b in buckets),
       rawio.obj(AGE_WORDS[b] for b in buckets)),
      (rawio.obj(u[3] for u in users), rawio.obj(u[3] for u in users)),
      (rawio.obj(u[4] for u in users), rawio.obj(u[4] for u in users)),
  ]
  items = rawio.split_lines(item_path, "|", 24)
  m_id = rawio.parse_ints(item_path, items, 0, "movie id")
  genre = []
  for i, it in enumerate(items, start=1):
    flags = it[5:]
    if any(f not in ("0", "1") for f in flags):
      raise rawio.DataError(f"{item_path}:{i}: genre flags must be 0/1")
    genre.append(ML100K_GENRES[flags.index("1")] if "1" in flags
                 else "unknown")
  m_cols = [
      (rawio.obj(it[0] for it in items), rawio.obj(it[0] for it in items)),
      (rawio.obj(it[1] for it in items), rawio.obj(it[1] for it in items)),
      (rawio.obj(genre), rawio.obj(genre)),
  ]
  ratings = rawio.numeric_table(data_path, "\t", 4)
  table = _assemble("ml-100k", (u_id, u_cols), (m_id, m_cols), ratings,
                    data_path)
  table.info.update(num_users=len(users), num_movies=len(items))
  return table
