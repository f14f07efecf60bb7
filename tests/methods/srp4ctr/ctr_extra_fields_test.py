"""The CTR zoo's optional extra dense fields (used by SRP4CTR's queries)."""
import jax
import numpy as np
import pytest
from flax import linen as nn

from flip_jax.models import ctr as ctr_lib


@pytest.mark.parametrize("name", sorted(ctr_lib.CTR_MODELS))
def test_every_zoo_model_takes_extra_fields(name):
  """Extra dense fields reach the interactions; without them the params
  are those of the plain backbone."""
  base = dict(embed_dim=8, dnn_hidden=(16,), low_rank=4, num_experts=2,
              att_heads=2, cin_layers=(4, 4), afn_ltl_hidden=4,
              afn_use_bn=False)
  rs = np.random.RandomState(0)
  ids = rs.randint(0, 40, size=(4, 3)).astype(np.int32)
  extra = rs.normal(size=(4, 2, 8)).astype(np.float32)
  plain = ctr_lib.build(ctr_lib.CTRConfig(name, 40, 3, **base))
  with_x = ctr_lib.build(ctr_lib.CTRConfig(name, 40, 3, num_extra_fields=2,
                                           **base))
  rng = jax.random.PRNGKey(0)
  p0 = jax.eval_shape(lambda: plain.init({"params": rng}, ids))
  p1 = nn.meta.unbox(jax.jit(lambda r: with_x.init({"params": r}, ids,
                                                   extra=extra))(rng))
  assert jax.tree.structure(nn.meta.unbox(p0)) == jax.tree.structure(p1)
  apply = jax.jit(with_x.apply)
  out = apply(p1, ids, extra=extra)
  assert out["ctr/logit"].shape == (4,)
  assert out["ctr/rep"].shape[-1] == ctr_lib.rep_dim(with_x.cfg)
  moved = apply(p1, ids, extra=extra + 1.0)["ctr/logit"]
  assert not np.allclose(moved, out["ctr/logit"])
  with pytest.raises(ValueError, match="extra fields"):
    with_x.apply(p1, ids)
