"""Padding to the data's longest prompt changes no output (data.pad_to)."""
import jax
import jax.numpy as jnp
import numpy as np

from flip_jax.methods.flip import finetune_model as ft_lib
from flip_jax.models import ctr as ctr_lib
from flip_jax.models import plm as plm_lib


def test_cutting_padding_leaves_outputs_equal(tiny_bert_dir):
  module, params, _ = plm_lib.load_pretrained(str(tiny_bert_dir))
  model = ft_lib.FlipCtrModel(ft_lib.FinetuneConfig(
      mode="joint", plm=module.config,
      ctr=ctr_lib.CTRConfig(name="dcnv2", num_features=40, num_fields=4)))
  rs = np.random.RandomState(0)
  length, longest = 48, 29
  lengths = rs.randint(5, longest + 1, 16)
  lengths[0] = longest
  mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
  batch = {"ids": rs.randint(0, 40, (16, 4)).astype(np.int32),
           "input_ids": np.where(mask > 0, rs.randint(1000, 9000, mask.shape),
                                 0).astype(np.int32),
           "attention_mask": mask}
  variables = jax.jit(model.init)(jax.random.key(0), batch)
  variables = {"params": {**variables["params"], "plm": params}}
  apply = jax.jit(model.apply)
  full = apply(variables, batch)
  cut = apply(variables, {**batch,
                                "input_ids": batch["input_ids"][:, :longest],
                                "attention_mask": mask[:, :longest]})
  for k in ("logit", "txt/logit", "ctr/logit"):
    np.testing.assert_allclose(np.asarray(cut[k]), np.asarray(full[k]),
                               rtol=1e-5, atol=1e-6, err_msg=k)
  # The cut really removed positions (not a no-op comparison).
  assert longest < length and jnp.asarray(mask[:, longest:]).sum() == 0
