"""The CTR task family (`flip_jax.train.ctr_task.BaseCtrTask`) on a toy
two-branch model: keys, the loss and its micro-batch shares, auxiliary
branch terms, L2, predict."""
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest
from flax import linen as nn

from flip_jax import losses
from flip_jax.train import ctr_task


class TwoBranch(nn.Module):
  """logit = ctr/logit + txt/logit (or the ctr branch alone)."""
  both: bool = True

  @nn.compact
  def __call__(self, batch, deterministic=True):
    del deterministic
    z = nn.Dense(1, name="ctr")(batch["x"])[..., 0]
    out = {"ctr/logit": z, "logit": z}
    if self.both:
      t = nn.Dense(1, name="txt")(batch["x"] ** 2)[..., 0]
      out.update({"txt/logit": t, "logit": z + t})
    return out


class ToyTask(ctr_task.BaseCtrTask):
  name = "toy"

  def __init__(self, config, both=True, aux=0.0, l2=None):
    super().__init__(config)
    self.model = TwoBranch(both)
    self._aux, self._l2 = aux, l2

  def model_keys(self):
    return ("x",)

  def aux_logits(self):
    return (("ctr/logit", "txt/logit"), self._aux) if self._aux else ((), 0.)

  def l2_coefficients(self):
    return self._l2


def _config(reduction):
  return mlc.ConfigDict({"loss": {"reduction": reduction}})


def _batch(n=8, seed=0):
  r = np.random.default_rng(seed)
  return {"x": r.normal(size=(n, 3)).astype(np.float32),
          "label": (r.random(n) < 0.5).astype(np.float32),
          "weight": np.r_[np.ones(n - 2), 0.0, 2.0].astype(np.float32)}


def _params(task, batch):
  return task.init_variables(jax.random.key(0), batch, {})["params"]


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_loss_is_bce_plus_weighted_branches_and_micro_shares_add_up(
    reduction):
  task = ToyTask(_config(reduction), aux=0.5)
  batch = _batch()
  params = _params(task, batch)
  loss, (metrics, _) = task.data_loss(params, {}, batch, {}, {})
  out = task.model.apply({"params": params}, batch)
  y, w = batch["label"], batch["weight"]

  def bce(key):
    return losses.bce_with_logits(out[key], y, w, reduction=reduction)
  want = bce("logit") + 0.5 * (bce("ctr/logit") + bce("txt/logit"))
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  np.testing.assert_allclose(metrics["bce"], bce("logit"), rtol=1e-6)
  # Two micro-batches' shares (each over the global batch's denominator)
  # add up to the global loss.
  norms = task.loss_norms(batch)
  halves = [{k: v[i::2] for k, v in batch.items()} for i in range(2)]
  shares = [task.data_loss(params, {}, h, {}, {}, norms)[0] for h in halves]
  np.testing.assert_allclose(sum(shares), loss, rtol=1e-5)


def test_keys_example_batch_l2_and_predict():
  batch = _batch()
  task = ToyTask(_config("mean"), l2={"^ctr/": 0.1})
  data = task.task_data({"train": batch, "valid": batch}, None)
  assert data.train_keys == ("x", "label", "weight")
  assert data.eval_keys == ("x",)
  params = _params(task, batch)
  l2, metrics = task.param_loss(params)
  want = 0.1 * sum(jnp.sum(v ** 2) for v in
                   jax.tree.leaves(params["ctr"]))
  np.testing.assert_allclose(l2, want, rtol=1e-6)
  assert set(metrics) == {"l2"}
  assert ToyTask(_config("mean")).param_loss(params) == (None, {})
  probs = task.predict({"params": params}, batch)
  assert set(probs) == {"prob", "ctr_prob", "txt_prob"}
  assert all(v.dtype == jnp.float32 for v in probs.values())
  # One branch: the probability alone (no branch AUC to report).
  one = ToyTask(_config("mean"), both=False)
  assert set(one.predict({"params": _params(one, batch)}, batch)) == {
      "prob"}


def test_a_reduction_outside_sum_and_mean_is_a_config_error():
  assert ToyTask(_config("mean")).config_errors() == []
  errors = ToyTask(_config("avg")).config_errors()
  assert len(errors) == 1 and "loss.reduction" in errors[0]
