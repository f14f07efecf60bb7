"""The PLM <-> Hugging Face name table (flip_jax.models.plm.hf_names)."""
import numpy as np

from flip_jax import layout_hooks
from flip_jax.models import plm
from flip_jax.models.plm import hf_names


def test_mapping_hooks_are_exact_inverses():
  cfg = plm.PLMConfig("bert", 50, 12, 1, 3, 20, 16)
  rng = np.random.default_rng(0)
  shapes = {"split_heads": (12, 3, 4), "heads_bias": (3, 4),
            "merge_heads": (3, 4, 12), "transpose": (12, 20),
            "identity": (5, 12)}
  torch_shapes = {"split_heads": (12, 12), "heads_bias": (12,),
                  "merge_heads": (12, 12), "transpose": (20, 12),
                  "identity": (5, 12)}
  for name, hook in hf_names.HOOKS.items():
    x = rng.normal(size=shapes[name]).astype(np.float32)
    t = hook.to_torch(x, cfg)
    assert t.shape == torch_shapes[name], name
    np.testing.assert_array_equal(hook.to_flax(t, cfg), x)
  # The q kernel row of head h, unit d is torch output row h * D + d.
  q = rng.normal(size=(12, 3, 4)).astype(np.float32)
  np.testing.assert_array_equal(
      hf_names.HOOKS["split_heads"].to_torch(q, cfg)[6], q[:, 1, 2])


def test_rows_expand_per_layer_and_use_the_shared_hook_type():
  cfg = plm.PLMConfig("roberta", 50, 12, 2, 3, 20, 16)
  rows = hf_names.encoder_rows(cfg)
  per_layer = [r for r in hf_names.ENCODER_ROWS if "{i}" in r[0]]
  assert len(rows) == (len(hf_names.ENCODER_ROWS) - len(per_layer)
                       + 2 * len(per_layer))
  table = {f: (t, h.name) for f, t, h in rows}
  assert table["encoder/layer_1/attention/query/kernel"] == (
      "encoder.layer.1.attention.self.query.weight", "split_heads")
  assert "encoder/layer_2/attention/query/kernel" not in table
  assert all(isinstance(h, layout_hooks.Hook) for _, _, h in rows)
  assert hf_names.Hook is layout_hooks.Hook
  head = hf_names.head_rows(cfg)
  assert [t for _, t, _ in head][-1] == "lm_head.bias"
  assert hf_names.normalize_hf_key("a.LayerNorm.gamma") == "a.LayerNorm.weight"
  assert hf_names.normalize_hf_key("a.LayerNorm.beta") == "a.LayerNorm.bias"
  assert hf_names.normalize_hf_key("a.dense.bias") == "a.dense.bias"
