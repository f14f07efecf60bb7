"""FG-BERT pretraining: the host masks' invariants and the loss vs NumPy."""
import functools

import jax
import numpy as np
from flax import linen as nn
from scipy import special

from flip_jax.data import sequences
from flip_jax.methods.srp4ctr import data as data_lib
from flip_jax.methods.srp4ctr import fgbert
from tests.methods.srp4ctr import srp_testlib as lib


def masked_batch(seed=0, batch=lib.B, prob=0.2):
  b = lib.random_batch(seed, batch)
  out = data_lib.mask_windows(b["hist"], b["hist_mask"], mask_prob=prob,
                              seed=7, epoch=1, index=np.arange(batch) + 100)
  return b, out


def test_mask_invariants():
  prob = 0.2
  b, m = masked_batch(prob=prob)
  hist, mask = b["hist"], b["hist_mask"]
  m_max = data_lib.max_masked(prob, lib.L)
  assert m["mlm_positions"].shape == (lib.B, m_max)
  assert m["mlm_labels"].shape == (lib.B, m_max, len(lib.VOCAB))
  for r in range(lib.B):
    n = int(mask[r].sum())
    want = 0 if n == 0 else min(m_max, max(1, int(np.rint(prob * n))))
    w = m["mlm_weight"][r]
    assert w.sum() == want and (w[:want] == 1).all()
    pos = m["mlm_positions"][r][:want]
    assert len(set(pos.tolist())) == want
    assert (mask[r, pos] == 1).all()                     # real events only
    # Every attribute of a masked event is MASK; the labels keep them.
    assert (m["mlm_hist"][r, pos] == sequences.MASK).all()
    np.testing.assert_array_equal(m["mlm_labels"][r, :want], hist[r, pos])
    keep = np.setdiff1d(np.arange(lib.L), pos)
    np.testing.assert_array_equal(m["mlm_hist"][r, keep], hist[r, keep])
  assert m["mlm_weight"][0].sum() == 0                   # empty history


def test_masks_are_a_pure_function_of_seed_epoch_and_row():
  b, m = masked_batch()
  again = data_lib.mask_windows(b["hist"][2:5], b["hist_mask"][2:5],
                                mask_prob=0.2, seed=7, epoch=1,
                                index=np.arange(2, 5) + 100)
  for k in m:
    np.testing.assert_array_equal(again[k], m[k][2:5])
  other = data_lib.mask_windows(b["hist"], b["hist_mask"], mask_prob=0.2,
                                seed=7, epoch=2,
                                index=np.arange(lib.B) + 100)
  assert not np.array_equal(other["mlm_positions"], m["mlm_positions"])


def _np_loss(params, batch, cfg):
  """Sum over attributes of the full-softmax CE means (a transcription)."""
  p = jax.tree.map(np.asarray, params)
  states, _ = lib.np_encoder(p["seq"], batch["mlm_hist"], batch["hist_mask"],
                             cfg.seq.num_layers)
  h = np.take_along_axis(states, batch["mlm_positions"][..., None], 1)
  w = batch["mlm_weight"]
  total, per = 0.0, {}
  for a, name in enumerate(lib.ATTRS):
    hp = p[f"heads_{a}"]
    z = h @ hp["dense"]["kernel"] + hp["dense"]["bias"]
    z = lib._ln(0.5 * z * (1 + special.erf(z / np.sqrt(2))), hp["ln"])  # pylint: disable=protected-access
    table = p["seq"]["embed"][f"attr_{name}"]
    logits = z @ table.T + p[f"bias_{name}"] - np.log(table.shape[0])
    y = batch["mlm_labels"][..., a]
    ce = special.logsumexp(logits, -1) - np.take_along_axis(
        logits, y[..., None], -1)[..., 0]
    per[name] = (w * ce).sum() / w.sum()
    total += per[name]
  return total, per


def test_loss_matches_numpy():
  cfg = fgbert.PretrainConfig(seq=lib.seq_config(), item_loss="full")
  model = fgbert.FGBertPretrainModel(cfg)
  b, m = masked_batch(seed=1)
  batch = {"hist_mask": b["hist_mask"], **m}
  consts = {"item_log_q": np.zeros(lib.VOCAB[0], np.float32)}
  rng = jax.random.PRNGKey(0)
  params = nn.meta.unbox(jax.jit(lambda r: model.init(
      {"params": r, "noise": r}, batch, consts))(rng)["params"])
  out = jax.jit(functools.partial(model.apply, rngs={"noise": rng}))(
      {"params": params}, batch, consts)
  want, per = _np_loss(params, batch, cfg)
  np.testing.assert_allclose(out["loss"], want, rtol=2e-5)
  for name in lib.ATTRS:
    np.testing.assert_allclose(out[f"{name}_loss"], per[name], rtol=2e-5)
  assert float(out["masked"]) == m["mlm_weight"].sum()
  # With the global batch's denominator, two halves add up to the whole.
  norms = m["mlm_weight"].sum()
  halves = [jax.jit(functools.partial(model.apply, rngs={"noise": rng}))(
      {"params": params}, {k: v[sl] for k, v in batch.items()}, consts,
      norms=norms)["loss"] for sl in (slice(0, 4), slice(4, None))]
  np.testing.assert_allclose(sum(halves), want, rtol=2e-5)
