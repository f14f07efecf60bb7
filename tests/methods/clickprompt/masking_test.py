"""PA-MLM token masking: the 15 % / 80-10-10 statistics and its invariants."""
import numpy as np

from flip_jax.methods.clickprompt import masking

MASK, V, SPECIAL = 3, 1000, (0, 1, 2, 3)


def _rows(n=4000, length=40, seed=0):
  rs = np.random.RandomState(seed)
  lens = rs.randint(10, length + 1, size=n)
  mask = (np.arange(length)[None] < lens[:, None]).astype(np.int32)
  ids = rs.randint(10, V, size=(n, length))
  ids[:, 0] = 1                                     # [CLS]
  ids[np.arange(n), lens - 1] = 2                   # [SEP]
  return np.where(mask > 0, ids, 0).astype(np.int32), mask


def _mask(ids, mask, rule=masking.TokenMasking(), seed=7, epoch=0, index=None):
  index = np.arange(len(ids)) if index is None else index
  return masking.mask_tokens(ids, mask, rule, mask_token_id=MASK,
                             vocab_size=V, special_ids=SPECIAL, seed=seed,
                             epoch=epoch, index=index)


def test_80_10_10_statistics():
  ids, mask = _rows()
  out, labels = _mask(ids, mask)
  cand = (mask > 0) & ~np.isin(ids, SPECIAL)
  picked = labels != -100
  assert not (picked & ~cand).any()              # specials, pads never
  np.testing.assert_array_equal(labels[picked], ids[picked])
  n = picked.sum()
  assert abs(n / cand.sum() - 0.15) < 0.005, n / cand.sum()
  to_mask = (out == MASK) & picked
  kept = (out == ids) & picked
  changed = picked & ~to_mask & ~kept
  assert abs(to_mask.sum() / n - 0.8) < 0.015
  # A random replacement may draw the original id (1/V): counted as kept.
  assert abs(changed.sum() / n - 0.1) < 0.01
  assert abs(kept.sum() / n - 0.1) < 0.01
  assert (out[~picked] == ids[~picked]).all()   # nothing else changes
  assert out.min() >= 0 and out.max() < V


def test_pure_function_of_seed_epoch_and_row():
  ids, mask = _rows(n=64)
  full = _mask(ids, mask)
  # The same rows drawn in another order / batch give the same masks.
  perm = np.random.RandomState(1).permutation(64)
  part = _mask(ids[perm[:20]], mask[perm[:20]], index=perm[:20])
  np.testing.assert_array_equal(part[0], full[0][perm[:20]])
  np.testing.assert_array_equal(part[1], full[1][perm[:20]])
  other = _mask(ids, mask, epoch=1)
  assert not np.array_equal(other[1], full[1])


def test_transform_adds_the_keys_and_rejects_bad_rules():
  ids, mask = _rows(n=8)
  fn = masking.masking_transform(masking.TokenMasking(prob=1.0),
                                 mask_token_id=MASK, vocab_size=V,
                                 special_ids=SPECIAL)
  out = fn({"input_ids": ids, "attention_mask": mask}, seed=0, epoch=0,
           index=np.arange(8))
  cand = (mask > 0) & ~np.isin(ids, SPECIAL)
  np.testing.assert_array_equal(out["mlm_labels"] != -100, cand)
  np.testing.assert_array_equal(out["input_ids"], ids)
  for bad in (dict(prob=1.5), dict(mask_frac=0.95, random_frac=0.1)):
    try:
      masking.TokenMasking(**bad)
    except ValueError:
      continue
    raise AssertionError(f"{bad} accepted")
