"""Pretraining masks (FLIP.md 5.1): pure, seeded numpy functions.

Randomness is a counter-based hash of (seed, epoch, example index, stream,
slot), so an example's masks depend only on those numbers, never on which
batch, worker or process draws them.

* MLM, rule 'field' (FLIP): m_t = max(1, int(F * text_mask_ratio)) fields are
  chosen uniformly among the maskable fields present in the tokens (a field
  cut by truncation has token_field -1 and is not maskable); ALL their value
  tokens become the mask token; labels are the original ids there, -100
  elsewhere. Template words, specials and padding are never masked.
* MLM, rule 'token' (BERT): each real, non-special token is picked with
  probability token_mask_prob; picked tokens become the mask token (80 %), a
  random token (10 %) or stay (10 %).
* MTM: m_r = max(1, int(F * ctr_mask_ratio)) fields chosen uniformly and
  independently of the text (or, with same_column, the text's fields first);
  their ids become the field's reserved MASK id; labels are the original
  global ids; a target that is a reserved (OOV/MASK) id gets weight 0.
"""
from __future__ import annotations

import functools

import dataclasses

import numpy as np

IGNORE = -100
_STREAM_TEXT, _STREAM_IDS, _STREAM_TOKEN, _STREAM_TOKEN_KIND = 1, 2, 3, 4
_STREAM_RANDOM_TOKEN = 5
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
  """What to mask (built from the data config by `from_config`)."""
  text_mask_ratio: float = 0.15
  ctr_mask_ratio: float = 0.15
  rule: str = "field"
  token_mask_prob: float = 0.15
  same_column: bool = False

  def __post_init__(self):
    if self.rule not in ("field", "token"):
      raise ValueError(f"masking rule {self.rule!r}: use 'field' or 'token'")
    for name in ("text_mask_ratio", "ctr_mask_ratio", "token_mask_prob"):
      v = getattr(self, name)
      if not 0 <= v <= 1:
        raise ValueError(f"masking {name}={v} not in [0, 1]")
    if self.same_column and self.rule != "field":
      raise ValueError("mask_same_column needs the 'field' MLM rule")

  @classmethod
  def from_config(cls, data_cfg) -> "MaskingConfig":
    return cls(text_mask_ratio=data_cfg.text_mask_ratio,
               ctr_mask_ratio=data_cfg.ctr_mask_ratio,
               rule=data_cfg.mlm_rule,
               token_mask_prob=data_cfg.token_mask_prob,
               same_column=data_cfg.mask_same_column)


def num_masked_fields(num_fields: int, ratio: float) -> int:
  """m = max(1, int(F * ratio)): 1 for F = 8, 2 for F = 15 at 0.15."""
  return max(1, int(num_fields * ratio))


def _mix(x: np.ndarray) -> np.ndarray:
  """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def uniform(seed: int, epoch: int, index: np.ndarray, stream: int,
            num: int) -> np.ndarray:
  """Uniform [0, 1) float64 [B, num], a pure function of its arguments."""
  with np.errstate(over="ignore"):
    base = _mix(np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
                + np.uint64(epoch & 0xFFFFFFFF))
    base = _mix(base ^ (np.uint64(stream) * np.uint64(0xD1B54A32D192ED03)))
    idx = np.asarray(index, np.int64).astype(np.uint64)[:, None]
    slot = np.arange(num, dtype=np.uint64)[None, :]
    x = _mix(base ^ _mix(idx * np.uint64(0x2545F4914F6CDD1D)
                         + slot + np.uint64(1)))
  return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def mask_text_fields(input_ids, token_field, num_fields: int, ratio: float,
                     mask_token_id: int, *, seed: int, epoch: int, index
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """FLIP whole-value text masking.

  Args:
    input_ids: int [B, L].
    token_field: int [B, L], field index of each token or -1.
    num_fields: F.
    ratio: text_mask_ratio.
    mask_token_id: the tokenizer's mask id.
    seed, epoch, index: randomness key; index int [B] example indices.

  Returns:
    (mlm_input_ids int32 [B, L], mlm_labels int32 [B, L] (-100 = not
    masked), chosen int32 [B, m_t]: masked field indices, -1 where a row has
    fewer maskable fields than m_t).
  """
  input_ids = np.asarray(input_ids, np.int32)
  token_field = np.asarray(token_field)
  m = num_masked_fields(num_fields, ratio)
  b = input_ids.shape[0]
  present = np.zeros((b, num_fields), bool)
  rows, cols = np.nonzero(token_field >= 0)
  present[rows, token_field[rows, cols]] = True
  key = np.where(present, uniform(seed, epoch, index, _STREAM_TEXT,
                                  num_fields), 2.0)
  chosen = np.argsort(key, axis=1, kind="stable")[:, :m]
  ok = np.take_along_axis(key, chosen, 1) < 2.0
  chosen = np.where(ok, chosen, -1).astype(np.int32)
  hit = ((token_field[:, :, None] == chosen[:, None, :]).any(-1)
         & (token_field >= 0))
  mlm_input = np.where(hit, np.int32(mask_token_id), input_ids)
  labels = np.where(hit, input_ids, np.int32(IGNORE)).astype(np.int32)
  return mlm_input.astype(np.int32), labels, chosen


def mask_text_tokens(input_ids, attention_mask, prob: float,
                     mask_token_id: int, vocab_size: int, *, seed: int,
                     epoch: int, index, special_token_ids=None
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Classic BERT token masking (the P-Tab baseline): 15 %, 80/10/10.

  Specials are the ids in `special_token_ids`, or, if None, the first and
  the last real position of each row (the tokenizer's [CLS]/[SEP]).

  Returns:
    (mlm_input_ids int32 [B, L], mlm_labels int32 [B, L]).
  """
  input_ids = np.asarray(input_ids, np.int32)
  real = np.asarray(attention_mask) > 0
  b, length = input_ids.shape
  if special_token_ids is None:
    last = real.sum(1) - 1
    pos = np.arange(length)[None, :]
    special = (pos == 0) | (pos == last[:, None])
  else:
    special = np.isin(input_ids, np.asarray(special_token_ids))
  cand = real & ~special
  pick = (uniform(seed, epoch, index, _STREAM_TOKEN, length) < prob) & cand
  kind = uniform(seed, epoch, index, _STREAM_TOKEN_KIND, length)
  rand_tok = (uniform(seed, epoch, index, _STREAM_RANDOM_TOKEN, length)
              * vocab_size).astype(np.int32)
  out = np.where(pick & (kind < 0.8), np.int32(mask_token_id), input_ids)
  out = np.where(pick & (kind >= 0.8) & (kind < 0.9), rand_tok, out)
  labels = np.where(pick, input_ids, np.int32(IGNORE)).astype(np.int32)
  return out.astype(np.int32), labels


def mask_ids(ids, mask_ids_per_field: np.ndarray, reserved_ids: np.ndarray,
             ratio: float, *, seed: int, epoch: int, index,
             text_fields: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """MTM field masking of global ids.

  Args:
    ids: int [B, F] global ids.
    mask_ids_per_field: int [F], each field's MASK global id.
    reserved_ids: all OOV/MASK global ids (targets there get weight 0).
    ratio: ctr_mask_ratio.
    seed, epoch, index: randomness key.
    text_fields: optional int [B, m_t] text-masked fields (-1 = none) to
      reuse first (mask_same_column).

  Returns:
    (mtm_ids int32 [B, F], mtm_positions int32 [B, M] (ascending),
    mtm_labels int32 [B, M] original global ids, mtm_weight float32 [B, M]).
  """
  ids = np.asarray(ids, np.int32)
  b, num_fields = ids.shape
  m = num_masked_fields(num_fields, ratio)
  key = uniform(seed, epoch, index, _STREAM_IDS, num_fields)
  if text_fields is not None:
    for j in range(text_fields.shape[1]):
      col = text_fields[:, j]
      r = np.flatnonzero(col >= 0)
      key[r, col[r]] = -1.0 + j * 1e-3
  pos = np.sort(np.argsort(key, axis=1, kind="stable")[:, :m], axis=1)
  pos = pos.astype(np.int32)
  labels = np.take_along_axis(ids, pos, 1)
  mtm = ids.copy()
  np.put_along_axis(mtm, pos, np.asarray(mask_ids_per_field, np.int32)[pos],
                    1)
  weight = (~np.isin(labels, reserved_ids)).astype(np.float32)
  return mtm, pos, labels.astype(np.int32), weight


def apply_masking(batch: dict, cfg: MaskingConfig, *, seed: int, epoch: int,
                  index, mask_token_id: int | None, feature_map=None,
                  vocab_size: int | None = None, special_token_ids=None
                  ) -> dict:
  """Adds the pretraining keys to a batch dict (see the pipeline contract).

  MLM keys need text columns and `mask_token_id`; MTM keys need
  `feature_map`. Missing inputs are an error rather than a silent skip.
  """
  out = dict(batch)
  num_fields = batch["ids"].shape[1]
  text_fields = None
  if "input_ids" in batch:
    if mask_token_id is None:
      raise ValueError("masking text needs mask_token_id")
    if cfg.rule == "field":
      mi, ml, text_fields = mask_text_fields(
          batch["input_ids"], batch["token_field"], num_fields,
          cfg.text_mask_ratio, mask_token_id, seed=seed, epoch=epoch,
          index=index)
    else:
      if vocab_size is None:
        raise ValueError("the 'token' MLM rule needs vocab_size")
      mi, ml = mask_text_tokens(
          batch["input_ids"], batch["attention_mask"], cfg.token_mask_prob,
          mask_token_id, vocab_size, seed=seed, epoch=epoch, index=index,
          special_token_ids=special_token_ids)
    out["mlm_input_ids"], out["mlm_labels"] = mi, ml
  if feature_map is None:
    raise ValueError("masking ids (MTM) needs feature_map")
  if cfg.same_column and text_fields is None:
    raise ValueError("mask_same_column needs text columns")
  (out["mtm_ids"], out["mtm_positions"], out["mtm_labels"],
   out["mtm_weight"]) = mask_ids(
       batch["ids"], feature_map.mask_ids(), feature_map.reserved_ids(),
       cfg.ctr_mask_ratio, seed=seed, epoch=epoch, index=index,
       text_fields=text_fields if cfg.same_column else None)
  return out


def masking_transform(cfg: MaskingConfig, *, mask_token_id: int | None,
                      feature_map, vocab_size: int | None = None,
                      special_token_ids=None):
  """``apply_masking`` as the pipeline's batch transform (picklable)."""
  if feature_map is None:
    raise ValueError("masking needs feature_map (MTM mask ids)")
  return functools.partial(
      apply_masking, cfg=cfg, mask_token_id=mask_token_id,
      feature_map=feature_map, vocab_size=vocab_size,
      special_token_ids=special_token_ids)
