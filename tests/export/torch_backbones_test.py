"""Parity of the torch CTR backbones with the Flax ones via `ctr_mapping`.

For every backbone (and the config variants that change its parameters):
random Flax variables -> torch state dict -> same rep and logit (1e-5) on
random ids, and torch -> Flax gives back bit-identical variables.
"""
import jax
import numpy as np
import pytest
import torch
from flax import linen as nn

from flip_jax.export import ctr_mapping
from flip_jax.export import torch_backbones
from flip_jax.models import ctr

torch.set_num_threads(1)

N, F, E, B = 40, 3, 4, 8
TINY = dict(embed_dim=E, dnn_hidden=(16, 8), low_rank=3, num_experts=2,
            att_layers=2, cin_layers=(4, 2), afn_ltl_hidden=5,
            afm_attention_factor=3)
CASES = [(name, {}) for name in sorted(ctr.CTR_MODELS)] + [
    ("dcnv2", {"cross_type": "full"}),
    ("dcnv2", {"dnn_use_bn": True, "dnn_act": "gelu"}),
    ("autoint", {"att_res": False, "att_scaling": True, "att_heads": 1}),
    ("xdeepfm", {"cin_split_half": False, "cin_act": "tanh"}),
    ("afn", {"afn_use_bn": False}),
    ("pnn", {"dnn_use_bn": True}),
]


def _cfg(name, **kw):
  return ctr.CTRConfig(name=name, num_features=N, num_fields=F,
                       **{**TINY, **kw})


def _ids(seed=0):
  return np.random.default_rng(seed).integers(0, N, (B, F)).astype(np.int32)


def random_variables(cfg, seed=0):
  """Flax variables with every tensor at a scale where errors would show."""
  model = ctr.build(cfg)
  variables = nn.meta.unbox(model.init(jax.random.key(seed), _ids()))
  rng = np.random.default_rng(seed + 1)

  def draw(path, x):
    name = jax.tree_util.keystr(path)
    if "var" in name:
      return rng.uniform(0.5, 1.5, x.shape).astype(np.float32)
    return (0.3 * rng.standard_normal(x.shape)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, variables)


def _torch_model(cfg, variables):
  rows = ctr_mapping.backbone_rows(cfg)
  model = torch_backbones.build_torch(cfg)
  model.load_state_dict(torch_backbones.to_tensors(
      ctr_mapping.to_torch(rows, variables)), strict=True)
  return model


def test_every_flax_backbone_has_a_torch_twin_and_a_mapping():
  assert set(ctr.CTR_MODELS) == set(torch_backbones.TORCH_CTR_MODELS)
  assert set(ctr.CTR_MODELS) == set(ctr_mapping.MODEL_GROUPS)


@pytest.mark.parametrize("name,extra", CASES,
                         ids=[f"{n}-{'-'.join(e) or 'default'}"
                              for n, e in CASES])
def test_forward_parity_and_bit_identical_round_trip(name, extra):
  cfg = _cfg(name, **extra)
  variables = random_variables(cfg)
  ids = _ids(seed=3)
  want = ctr.build(cfg).apply(variables, ids)
  model = _torch_model(cfg, variables)
  with torch.no_grad():
    got = model(torch.from_numpy(ids))
  assert model.rep_dim == ctr.rep_dim(cfg)
  # Non-trivial outputs, so the comparison can fail.
  assert np.std(np.asarray(want["ctr/logit"])) > 1e-3
  for key in ("ctr/rep", "ctr/logit"):
    np.testing.assert_allclose(got[key].numpy(), np.asarray(want[key]),
                               rtol=1e-5, atol=1e-5, err_msg=key)
  back = ctr_mapping.to_flax(ctr_mapping.backbone_rows(cfg),
                             model.state_dict())
  flat_in = ctr_mapping.flatten(variables)
  flat_back = ctr_mapping.flatten(back)
  assert set(flat_in) == set(flat_back)
  for path, value in flat_in.items():
    got_value = flat_back[path]
    assert got_value.dtype == np.float32 and got_value.shape == value.shape
    assert np.array_equal(got_value, np.asarray(value)), path


def test_export_of_an_untrained_flax_init_is_loadable_strictly():
  # BatchNorm counters are torch-only buffers: written as 0, ignored back.
  cfg = _cfg("afn")
  variables = nn.meta.unbox(ctr.build(cfg).init(jax.random.key(0), _ids()))
  sd = ctr_mapping.to_torch(ctr_mapping.backbone_rows(cfg), variables)
  assert sd["ltl.bn_0.num_batches_tracked"].dtype == np.int64
  model = torch_backbones.build_torch(cfg)
  model.load_state_dict(torch_backbones.to_tensors(sd), strict=True)
  assert set(sd) == set(model.state_dict())


def test_bfloat16_params_are_upcast_exactly():
  cfg = _cfg("dcnv2")
  variables = random_variables(cfg)
  bf16 = jax.tree_util.tree_map(
      lambda x: np.asarray(x).astype(jax.numpy.bfloat16), variables)
  sd = ctr_mapping.to_torch(ctr_mapping.backbone_rows(cfg), bf16)
  assert all(v.dtype == np.float32 for v in sd.values())
  np.testing.assert_array_equal(
      sd["embedding.weight"],
      np.asarray(bf16["params"]["embedding"]["table"]).astype(np.float32))


def test_mapping_errors_name_the_offending_keys():
  cfg = _cfg("deepfm")
  rows = ctr_mapping.backbone_rows(cfg)
  variables = random_variables(cfg)
  params = dict(variables["params"])
  del params["head"]
  with pytest.raises(KeyError, match="params/head/kernel"):
    ctr_mapping.to_torch(rows, {"params": params})
  params = dict(variables["params"], stray={"w": np.zeros(2)})
  with pytest.raises(KeyError, match="params/stray/w"):
    ctr_mapping.to_torch(rows, {"params": params})
  sd = ctr_mapping.to_torch(rows, variables)
  with pytest.raises(KeyError, match="extra.weight"):
    ctr_mapping.to_flax(rows, {**sd, "extra.weight": np.zeros(1)})
  sd.pop("linear.weight")
  with pytest.raises(KeyError, match="linear.weight"):
    ctr_mapping.to_flax(rows, sd)
  with pytest.raises(ValueError, match="no torch mapping for backbone"):
    ctr_mapping.backbone_rows(ctr.CTRConfig(name="nope", num_features=N,
                                            num_fields=F))


def test_torch_backbone_rejects_bad_ids():
  model = torch_backbones.build_torch(_cfg("dcnv2"))
  with pytest.raises(ValueError, match=r"values must lie in \[0, 40\)"):
    model(torch.full((2, F), N))
  with pytest.raises(ValueError, match=r"expected shape \[batch, 3\]"):
    model(torch.zeros((2, F + 1), dtype=torch.long))
  with pytest.raises(ValueError, match="integer dtype"):
    model(torch.zeros((2, F)))
