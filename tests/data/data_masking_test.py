"""Pretraining masks: FLIP.md 12 invariants (property-based)."""
from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from flip_jax.data import features
from flip_jax.data import masking
from flip_jax.data import rawparse

MASK_TOKEN, PAD = 103, 0


def _batch(rng, b, num_fields, length):
  """Random token rows: [CLS] clauses (template + value tokens) [SEP] pad."""
  ids = np.full((b, length), PAD, np.int32)
  tf = np.full((b, length), -1, np.int32)
  am = np.zeros((b, length), np.int32)
  for r in range(b):
    toks, fields = [101], [-1]
    for f in range(num_fields):
      if rng.random() < 0.15 and f > 0:  # field dropped (truncated away)
        continue
      toks += list(rng.integers(1000, 1010, 2))  # template words
      fields += [-1, -1]
      k = int(rng.integers(1, 4))
      toks += list(rng.integers(2000, 3000, k))
      fields += [f] * k
    toks, fields = toks[:length - 1] + [102], fields[:length - 1] + [-1]
    ids[r, :len(toks)], tf[r, :len(toks)] = toks, fields
    am[r, :len(toks)] = 1
  return ids, tf, am


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), epoch=st.integers(0, 50),
       num_fields=st.sampled_from([3, 8, 15]),
       ratio=st.sampled_from([0.0, 0.15, 0.3]))
def test_field_mlm_invariants(seed, epoch, num_fields, ratio):
  rng = np.random.default_rng(seed)
  ids, tf, am = _batch(rng, 6, num_fields, 64)
  index = rng.integers(0, 10**6, 6)
  out, labels, chosen = masking.mask_text_fields(
      ids, tf, num_fields, ratio, MASK_TOKEN, seed=seed, epoch=epoch,
      index=index)
  m = max(1, int(num_fields * ratio))
  assert chosen.shape == (6, m)
  for r in range(6):
    present = set(tf[r][tf[r] >= 0].tolist())
    picked = [c for c in chosen[r].tolist() if c >= 0]
    assert len(picked) == min(m, len(present)) == len(set(picked))
    assert set(picked) <= present
    masked = out[r] != ids[r]
    # exactly the tokens of the picked fields, all of them, nothing else
    want = np.isin(tf[r], picked) & (tf[r] >= 0)
    np.testing.assert_array_equal(out[r] == MASK_TOKEN, want | (
        (ids[r] == MASK_TOKEN) & ~want))
    assert not (masked & ~want).any()
    assert (out[r][want] == MASK_TOKEN).all()
    assert (labels[r][want] == ids[r][want]).all()
    assert (labels[r][~want] == masking.IGNORE).all()
    assert not masked[am[r] == 0].any() and not masked[0]
  again = masking.mask_text_fields(ids, tf, num_fields, ratio, MASK_TOKEN,
                                   seed=seed, epoch=epoch, index=index)
  np.testing.assert_array_equal(again[0], out)
  # Per-example: the same example in another batch position gets the same
  # mask.
  perm = rng.permutation(6)
  moved = masking.mask_text_fields(ids[perm], tf[perm], num_fields, ratio,
                                   MASK_TOKEN, seed=seed, epoch=epoch,
                                   index=index[perm])
  np.testing.assert_array_equal(moved[0], out[perm])


def test_masks_change_with_seed_epoch_and_index():
  rng = np.random.default_rng(0)
  ids, tf, _ = _batch(rng, 64, 8, 64)
  index = np.arange(64)
  base = masking.mask_text_fields(ids, tf, 8, .15, MASK_TOKEN, seed=1,
                                  epoch=0, index=index)[2]
  for kw in ({"seed": 2, "epoch": 0}, {"seed": 1, "epoch": 1}):
    other = masking.mask_text_fields(ids, tf, 8, .15, MASK_TOKEN,
                                     index=index, **kw)[2]
    assert (other != base).mean() > 0.5
  counts = np.bincount(base.ravel(), minlength=8)
  assert counts.min() > 0  # roughly uniform over fields


def _fmap(num_fields=8):
  keys = [rawparse.obj([f"v{j % (f + 2)}" for j in range(50)])
          for f in range(num_fields)]
  return features.FeatureMap.build([f"f{i}" for i in range(num_fields)],
                                   [f"F{i}" for i in range(num_fields)], keys)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), ratio=st.sampled_from([.15, .3, .5]),
       same=st.booleans())
def test_mtm_invariants(seed, ratio, same):
  fm = _fmap()
  rng = np.random.default_rng(seed)
  local = rng.integers(0, fm.vocab_sizes[None, :], (16, 8))  # incl. OOV/MASK
  ids = (fm.offsets[None, :] + local).astype(np.int32)
  text_fields = None
  if same:
    text_fields = np.stack([rng.permutation(8)[:1] for _ in range(16)])
  mtm, pos, labels, weight = masking.mask_ids(
      ids, fm.mask_ids(), fm.reserved_ids(), ratio, seed=seed, epoch=3,
      index=np.arange(16), text_fields=text_fields)
  m = max(1, int(8 * ratio))
  assert pos.shape == labels.shape == weight.shape == (16, m)
  for r in range(16):
    assert len(set(pos[r].tolist())) == m and (np.diff(pos[r]) > 0).all()
    assert (mtm[r, pos[r]] == fm.mask_ids()[pos[r]]).all()
    rest = np.setdiff1d(np.arange(8), pos[r])
    assert (mtm[r, rest] == ids[r, rest]).all()
    assert (labels[r] == ids[r, pos[r]]).all()
    if same:
      assert text_fields[r, 0] in pos[r]
  reserved = fm.is_reserved(labels)
  assert (weight[reserved] == 0).all() and (weight[~reserved] == 1).all()


def test_apply_masking_contract_and_token_rule():
  fm = _fmap()
  rng = np.random.default_rng(0)
  ids, tf, am = _batch(rng, 32, 8, 48)
  batch = {"ids": (fm.offsets + 2).astype(np.int32)[None].repeat(32, 0),
           "label": np.zeros(32, np.float32), "row_id": np.arange(32),
           "input_ids": ids, "token_field": tf, "attention_mask": am}
  out = masking.apply_masking(batch, masking.MaskingConfig(), seed=0,
                              epoch=0, index=batch["row_id"],
                              mask_token_id=MASK_TOKEN, feature_map=fm)
  assert out["mlm_labels"].dtype == np.int32
  assert out["mtm_positions"].shape == (32, 1)
  assert out["mtm_weight"].dtype == np.float32
  assert ((out["mlm_labels"] != masking.IGNORE).sum(1) > 0).all()
  cfg = masking.MaskingConfig(rule="token")
  tok = masking.apply_masking(batch, cfg, seed=0, epoch=0,
                              index=batch["row_id"], mask_token_id=MASK_TOKEN,
                              feature_map=fm, vocab_size=30522)
  picked = tok["mlm_labels"] != masking.IGNORE
  real = (am > 0)
  assert not picked[:, 0].any() and not picked[~real].any()
  last = real.sum(1) - 1
  assert not picked[np.arange(32), last].any()
  frac = picked.sum() / (real.sum() - 64)
  assert 0.08 < frac < 0.22
  masked_frac = (tok["mlm_input_ids"][picked] == MASK_TOKEN).mean()
  assert 0.6 < masked_frac < 0.95
  with pytest.raises(ValueError, match="vocab_size"):
    masking.apply_masking(batch, cfg, seed=0, epoch=0, index=batch["row_id"],
                          mask_token_id=MASK_TOKEN, feature_map=fm)
  with pytest.raises(ValueError, match="rule"):
    masking.MaskingConfig(rule="span")
