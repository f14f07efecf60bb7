"""PA-MLM text masking (CLICKPROMPT_SRP4CTR.md A6): pure, seeded, host-side.

Every real, non-special token is selected with probability ``prob``
(0.15); a selected token becomes the mask token with probability
``mask_frac`` (0.8), a uniformly random vocabulary token with probability
``random_frac`` (0.1), and stays itself otherwise (0.1): the rule of HF's
``DataCollatorForLanguageModeling``, which the official code uses. Labels
are the original ids at selected positions and -100 elsewhere. The IDs are
never masked (they feed the prompt generator in full).

Randomness is the data layer's counter-based hash
(``flip_jax.data.masking.uniform``) of (seed, epoch, row position, stream,
slot): a row's mask depends on nothing else (not the batch, worker or
process that draws it), which keeps resumed and multi-host runs identical.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from flip_jax.data import masking as data_masking

IGNORE = -100
# Streams of the hash; distinct from the data layer's FLIP streams (1-5).
_STREAM_PICK, _STREAM_KIND, _STREAM_TOKEN = 11, 12, 13


@dataclasses.dataclass(frozen=True)
class TokenMasking:
  """The 15 % / 80-10-10 rule (fields of ``config.pretrain.masking``)."""
  prob: float = 0.15
  mask_frac: float = 0.8
  random_frac: float = 0.1

  def __post_init__(self):
    for name in ("prob", "mask_frac", "random_frac"):
      v = getattr(self, name)
      if not 0.0 <= v <= 1.0:
        raise ValueError(f"pretrain.masking.{name}={v}: not in [0, 1]")
    if self.mask_frac + self.random_frac > 1.0:
      raise ValueError("pretrain.masking: mask_frac + random_frac > 1")


def mask_tokens(input_ids, attention_mask, rule: TokenMasking, *,
                mask_token_id: int, vocab_size: int, special_ids, seed: int,
                epoch: int, index) -> tuple[np.ndarray, np.ndarray]:
  """Token-level MLM masking of one batch.

  Args:
    input_ids: int [B, L] token ids.
    attention_mask: [B, L] 1 on real tokens.
    rule: selection probability and the 80/10/10 split.
    mask_token_id: the tokenizer's mask id.
    vocab_size: random replacements are drawn from [0, vocab_size).
    special_ids: ids never selected ([CLS], [SEP], pad ...).
    seed, epoch, index: the randomness key; index int [B] row positions.

  Returns:
    (mlm_input_ids int32 [B, L], mlm_labels int32 [B, L], -100 = not
    selected).
  """
  ids = np.asarray(input_ids, np.int32)
  length = ids.shape[1]
  cand = (np.asarray(attention_mask) > 0) & ~np.isin(
      ids, np.asarray(list(special_ids), np.int64))
  u = functools.partial(data_masking.uniform, seed, epoch, index, num=length)
  pick = (u(stream=_STREAM_PICK) < rule.prob) & cand
  kind = u(stream=_STREAM_KIND)
  rand_tok = np.minimum((u(stream=_STREAM_TOKEN) * vocab_size).astype(
      np.int64), vocab_size - 1).astype(np.int32)
  to_mask = pick & (kind < rule.mask_frac)
  to_rand = pick & (kind >= rule.mask_frac) & (
      kind < rule.mask_frac + rule.random_frac)
  out = np.where(to_mask, np.int32(mask_token_id), ids)
  out = np.where(to_rand, rand_tok, out)
  labels = np.where(pick, ids, np.int32(IGNORE)).astype(np.int32)
  return out.astype(np.int32), labels


def apply_masking(batch: dict, *, rule: TokenMasking, mask_token_id: int,
                  vocab_size: int, special_ids: tuple[int, ...], seed: int,
                  epoch: int, index) -> dict:
  """Adds ``mlm_input_ids`` and ``mlm_labels`` to a batch (pipeline hook)."""
  out = dict(batch)
  out["mlm_input_ids"], out["mlm_labels"] = mask_tokens(
      batch["input_ids"], batch["attention_mask"], rule,
      mask_token_id=mask_token_id, vocab_size=vocab_size,
      special_ids=special_ids, seed=seed, epoch=epoch, index=index)
  return out


def masking_transform(rule: TokenMasking, *, mask_token_id: int,
                      vocab_size: int, special_ids):
  """``apply_masking`` as the pipeline's batch transform (picklable)."""
  if mask_token_id is None:
    raise ValueError("PA-MLM masking needs a tokenizer with a mask token")
  return functools.partial(apply_masking, rule=rule,
                           mask_token_id=int(mask_token_id),
                           vocab_size=int(vocab_size),
                           special_ids=tuple(int(i) for i in special_ids))
