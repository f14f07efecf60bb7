"""The torch twin of the CTR model: parity <= 1e-5, folded too; the weight
table round-trips bit-exactly."""
import functools

import jax
import numpy as np
import pytest
import torch

from flip_jax.export import ctr_mapping
from flip_jax.methods.srp4ctr import export
from flip_jax.methods.srp4ctr import model as model_lib
from tests.methods.srp4ctr import srp_testlib as lib


@pytest.mark.parametrize("sequence,cross,queries,ctr", [
    ("fgbert", True, 3, "dcnv2"), ("din", False, 0, "deepfm"),
    ("none", False, 0, "dcnv2")])
def test_torch_twin_parity(sequence, cross, queries, ctr):
  cfg = lib.model_config(sequence, cross, queries, ctr=ctr)
  model = model_lib.Srp4ctrModel(cfg)
  batch = lib.random_batch(seed=4)
  batch = {k: batch[k] for k in ("ids", "target", "hist", "hist_mask")}
  params = lib.init(model, batch, seed=1)
  # Non-trivial weights everywhere (zero-init biases and tiny embeddings
  # would hide layout mistakes).
  leaves, tree = jax.tree.flatten(params)
  rs = np.random.RandomState(0)
  params = jax.tree.unflatten(tree, [
      np.asarray(x) + 0.05 * rs.standard_normal(np.shape(x)).astype(
          np.float32) for x in leaves])
  variables = {"params": params}
  twin = export.to_torch_model(cfg, variables)
  assert export.max_prob_diff(model, variables, twin, batch) <= 1e-5
  # Folded: one user, its candidates.
  req = {"hist": batch["hist"][2:3], "hist_mask": batch["hist_mask"][2:3],
         "ids": batch["ids"][None], "target": batch["target"][None]}
  want = jax.jit(functools.partial(model.apply, method=model.folded))(
      variables, req)["logit"]
  with torch.no_grad():
    got = twin.folded({k: torch.from_numpy(np.asarray(v))
                       for k, v in req.items()}).numpy()
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # The table in both directions: bit-identical params.
  rows = export.export_rows(cfg, params)
  back = ctr_mapping.to_flax(rows, ctr_mapping.to_torch(rows, variables))
  jax.tree.map(np.testing.assert_array_equal, back["params"],
               jax.tree.map(np.asarray, params))
  # The config survives its JSON form.
  assert export.config_from_json(export.config_to_json(cfg)) == cfg
