"""A MovieLens-like synthetic dataset written in the raw ML-1M format.

Users have ML-1M demographics (gender, age bucket, occupation code, zip);
movies have titles made of real English words plus a year, and 1-3 genres.
Clicks come from a planted model in which both views carry signal:

  logit = id_weight * (b_user + b_movie + A[user, first genre])
        + word_weight * mean(sentiment of the title's words) * 3 + c

`b_user`, `b_movie` and the user-genre affinity `A` are only learnable from
IDs; word sentiment is shared across movies ('love', 'golden' positive;
'zombie', 'dead' negative), so a PLM reading titles can learn it, and an ID
model benefits from aligning with it. Ratings are 4/5 for clicks and 1-3
otherwise, so the ML rule rating >= 4 recovers the planted clicks.
The files (users.dat, movies.dat, ratings.dat; latin-1, '::') are read by
the ordinary ML-1M reader.
"""
from __future__ import annotations

import os

import numpy as np

from flip_jax.data import movielens

POSITIVE_WORDS = (
    "love", "golden", "hope", "brave", "dream", "joy", "wonder", "heart",
    "miracle", "sunshine", "hero", "friends", "kingdom", "treasure", "magic",
    "victory", "wedding", "spring", "legend", "café")
NEGATIVE_WORDS = (
    "zombie", "dead", "blood", "curse", "doom", "swamp", "killer", "ghost",
    "revenge", "cold", "storm", "prison", "poison", "shadow", "ruin",
    "nightmare", "toxic", "disaster", "fear", "crash")
NEUTRAL_WORDS = (
    "river", "city", "night", "house", "road", "summer", "story", "island",
    "train", "letter", "garden", "mountain", "window", "street", "king",
    "queen", "doctor", "captain", "winter", "harbor", "station", "return",
    "secret", "journey", "mirror", "forest", "ocean", "bridge", "empire",
    "paris", "detective", "circus", "desert", "machine", "voyage", "village")
GENRES = ("Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical",
          "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")
AGE_CODES = tuple(movielens.AGE_WORDS)


def word_sentiment() -> dict[str, float]:
  """The planted per-word sentiment (+1, -1 or 0)."""
  out = {w: 1.0 for w in POSITIVE_WORDS}
  out.update({w: -1.0 for w in NEGATIVE_WORDS})
  out.update({w: 0.0 for w in NEUTRAL_WORDS})
  return out


def generate(out_dir: str, *, num_users: int, num_movies: int,
             num_ratings: int, seed: int, id_weight: float = 1.0,
             word_weight: float = 1.0, start_timestamp: int = 956703932
             ) -> dict:
  """Writes users.dat, movies.dat and ratings.dat into `out_dir`.

  Args:
    out_dir: destination directory (created).
    num_users: number of users.
    num_movies: number of movies.
    num_ratings: number of distinct (user, movie) ratings
      (at most num_users * num_movies / 2).
    seed: numpy seed.
    id_weight: scale of the ID-only part of the planted logit.
    word_weight: scale of the title-word part of the planted logit.
    start_timestamp: first rating time (seconds).

  Returns:
    Facts about the generated data (positive rate, planted parameters' sizes).
  """
  if num_ratings > num_users * num_movies // 2:
    raise ValueError(f"synthetic: {num_ratings} ratings is too many for "
                     f"{num_users} users x {num_movies} movies")
  rng = np.random.default_rng(seed)
  os.makedirs(out_dir, exist_ok=True)
  genders = rng.choice(["F", "M"], num_users)
  ages = rng.choice(AGE_CODES, num_users,
                    p=[.04, .18, .35, .2, .09, .08, .06])
  occs = rng.integers(0, 21, num_users)
  zips = rng.integers(10000, 99999, num_users)
  with open(os.path.join(out_dir, "users.dat"), "w", encoding="latin-1") as f:
    for u in range(num_users):
      f.write(f"{u + 1}::{genders[u]}::{ages[u]}::{occs[u]}::{zips[u]}\n")
  sentiment = word_sentiment()
  words = sorted(sentiment)
  titles, first_genre, title_score = [], np.zeros(num_movies, np.int64), []
  with open(os.path.join(out_dir, "movies.dat"), "w", encoding="latin-1") as f:
    for m in range(num_movies):
      k = int(rng.integers(2, 5))
      ws = list(rng.choice(words, k, replace=False))
      title = " ".join(w.capitalize() for w in ws)
      title = f"The {title}" if rng.random() < 0.3 else title
      year = int(rng.integers(1930, 2001))
      gs = list(rng.choice(len(GENRES), int(rng.integers(1, 4)),
                           replace=False))
      first_genre[m] = gs[0]
      titles.append(title)
      title_score.append(np.mean([sentiment[w] for w in ws]) * 3.0)
      f.write(f"{m + 1}::{title} ({year})::"
              f"{'|'.join(GENRES[g] for g in gs)}\n")
  b_user = rng.normal(0, 0.8, num_users)
  b_movie = rng.normal(0, 0.8, num_movies)
  affinity = rng.normal(0, 1.0, (num_users, len(GENRES)))
  # Popularity skew: a few users and movies have many ratings.
  p_user = rng.pareto(1.5, num_users) + 1
  p_movie = rng.pareto(1.2, num_movies) + 1
  pairs = np.zeros(0, np.int64)
  while len(pairs) < num_ratings:
    need = (num_ratings - len(pairs)) * 2 + 100
    u = rng.choice(num_users, need, p=p_user / p_user.sum())
    m = rng.choice(num_movies, need, p=p_movie / p_movie.sum())
    pairs = np.concatenate([pairs, u * num_movies + m])
    _, first = np.unique(pairs, return_index=True)
    pairs = pairs[np.sort(first)]
  pairs = pairs[:num_ratings]
  u, m = pairs // num_movies, pairs % num_movies
  logit = (id_weight * (b_user[u] + b_movie[m] + affinity[u, first_genre[m]])
           + word_weight * np.asarray(title_score)[m] - 0.2)
  click = rng.random(num_ratings) < 1 / (1 + np.exp(-logit))
  rating = np.where(click, rng.integers(4, 6, num_ratings),
                    rng.integers(1, 4, num_ratings))
  times = start_timestamp + np.sort(rng.integers(0, 3 * 365 * 86400,
                                                 num_ratings))
  order = rng.permutation(num_ratings)  # file order != time order
  with open(os.path.join(out_dir, "ratings.dat"), "w",
            encoding="latin-1") as f:
    f.writelines(f"{u[i] + 1}::{m[i] + 1}::{rating[i]}::{times[i]}\n"
                 for i in order.tolist())
  return {"positive_rate": float(click.mean()), "num_users": num_users,
          "num_movies": num_movies, "num_ratings": num_ratings}
