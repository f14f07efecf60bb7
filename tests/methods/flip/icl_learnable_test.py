"""ICL can be learned: overfitting one batch on ICL alone reaches top-1
retrieval accuracy 1 (row i's ID view finds row i's text and back).

Guards that ICL's gradient reaches both towers and can drive the loss to
perfect retrieval, in the official form and the cosine one: the real
runs' ICL staying at chance (experiments/pretrain_check.py) is a property
of the recipe and its starting point, not of a broken path.
"""
import jax
import optax
import pytest

from flip_jax.methods.flip import pretrain_model as flip_lib
from tests.methods.flip import flip_testlib as tl


def _overfit(steps: int, **kw) -> tuple[float, float]:
  cfg = tl.no_dropout_config(mlm_enabled=False, mtm_enabled=False,
                             icl_weight=1.0, **kw)
  model = flip_lib.FlipPretrainModel(cfg)
  batch, c = tl.random_batch(0, 16), tl.consts()
  params = tl.init(model, batch)
  tx = optax.adam(1e-2)

  def loss_fn(p):
    out = model.apply({"params": p}, batch, c, deterministic=True)
    return out["loss"], out

  @jax.jit
  def step(p, st):
    (_, out), g = jax.value_and_grad(loss_fn, has_aux=True)(p)
    u, st = tx.update(g, st, p)
    return optax.apply_updates(p, u), st, out

  st = tx.init(params)
  first = None
  for _ in range(steps):
    params, st, out = step(params, st)
    first = float(out["icl_acc"]) if first is None else first
  return first, float(out["icl_acc"])


@pytest.mark.parametrize("kw", [{}, {"icl_normalize": True,
                                     "icl_temperature": 0.1}],
                         ids=["official", "cosine"])
def test_icl_overfits_one_batch(kw):
  first, last = _overfit(80, **kw)
  assert first < 0.5
  assert last == 1.0
