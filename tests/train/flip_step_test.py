"""FLIP pretraining model and sharded step on tiny random inputs."""
import functools

import jax
import numpy as np
import optax
import pytest
from flax import linen as nn

from flip_jax import noise as noise_lib
from flip_jax import sharding
from flip_jax.models import ctr as ctr_lib
from flip_jax.models import flip as flip_lib
from flip_jax.models import plm as plm_lib
from flip_jax.train import setup
from flip_jax.train import state as state_lib
from flip_jax.train import steps

F, FIELD_SIZE, V, L, B = 4, 15, 50, 12, 8
N = F * FIELD_SIZE
MASK_TOKEN = 3


def tiny_config(**overrides) -> flip_lib.FlipConfig:
  ctr_cfg = ctr_lib.CTRConfig(name="dcnv2", num_features=N, num_fields=F,
                              embed_dim=8, dnn_hidden=(16, 8), low_rank=4,
                              num_experts=2)
  plm_cfg = plm_lib.PLMConfig(
      model_type="bert", vocab_size=V, hidden_size=16, num_layers=2,
      num_heads=2, intermediate_size=32, max_position_embeddings=32,
      type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0,
      hidden_dropout=0.1, attention_dropout=0.1)
  kw = dict(ctr=ctr_cfg, plm=plm_cfg, num_features=N, num_fields=F,
            proj_dim=8, mlm_max_masked=6, mtm_num_negatives=5, mtm_field_dim=8)
  kw.update(overrides)
  return flip_lib.FlipConfig(**kw)


def random_batch(seed: int = 0, batch: int = B) -> dict[str, np.ndarray]:
  rs = np.random.RandomState(seed)
  offsets = np.arange(F) * FIELD_SIZE
  ids = offsets + rs.randint(2, FIELD_SIZE, size=(batch, F))
  pos = rs.randint(0, F, size=(batch, 1))
  labels = np.take_along_axis(ids, pos, 1)
  mtm_ids = ids.copy()
  np.put_along_axis(mtm_ids, pos, offsets[pos] + 1, 1)
  lengths = rs.randint(6, L + 1, size=batch)
  attn = (np.arange(L)[None] < lengths[:, None]).astype(np.int32)
  input_ids = np.where(attn > 0, rs.randint(5, V, size=(batch, L)), 0)
  mlm_ids, mlm_labels = input_ids.copy(), np.full((batch, L), -100)
  for i in range(batch):
    for j in rs.choice(np.arange(1, lengths[i] - 1), 2, replace=False):
      mlm_labels[i, j] = input_ids[i, j]
      mlm_ids[i, j] = MASK_TOKEN
  return {
      "ids": ids.astype(np.int32), "input_ids": input_ids.astype(np.int32),
      "attention_mask": attn, "mtm_ids": mtm_ids.astype(np.int32),
      "mtm_positions": pos.astype(np.int32), "mtm_labels": labels.astype(np.int32),
      "mtm_weight": np.ones((batch, 1), np.float32),
      "mlm_input_ids": mlm_ids.astype(np.int32),
      "mlm_labels": mlm_labels.astype(np.int32),
  }


def consts() -> dict[str, np.ndarray]:
  counts = np.random.RandomState(1).randint(1, 50, size=N).astype(np.float64)
  counts[np.arange(F) * FIELD_SIZE] = 0      # OOV
  counts[np.arange(F) * FIELD_SIZE + 1] = 0  # MASK
  return {"log_q": np.asarray(noise_lib.noise_log_probs(counts), np.float32),
          "field_offsets": (np.arange(F) * FIELD_SIZE).astype(np.int32),
          "field_sizes": np.full(F, FIELD_SIZE, np.int32)}


def init(model, batch, seed=0):
  rng = jax.random.PRNGKey(seed)
  return nn.meta.unbox(model.init({"params": rng, "dropout": rng, "noise": rng},
                                  batch, consts())["params"])


def test_fast_and_official_forms_agree():
  batch = random_batch()
  fast = flip_lib.FlipPretrainModel(tiny_config())
  official = flip_lib.FlipPretrainModel(
      tiny_config(share_unmasked_pass=False, mlm_masked_only=False))
  params = init(official, batch)
  rngs = {"noise": jax.random.PRNGKey(7)}
  a = fast.apply({"params": params}, batch, consts(), rngs=rngs)
  b = official.apply({"params": params}, batch, consts(), rngs=rngs)
  for k in ("icl_loss", "mtm_loss", "mlm_loss", "loss"):
    np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
  assert float(a["mlm_masked_tokens"]) == 2 * B
  assert float(a["mlm_dropped"]) == 0
  assert np.isfinite(float(a["loss"]))


def test_total_is_weighted_sum_and_disabled_losses_skip_params():
  batch = random_batch()
  model = flip_lib.FlipPretrainModel(tiny_config(icl_weight=0.5, mtm_weight=2.0))
  params = init(model, batch)
  out = model.apply({"params": params}, batch, consts(),
                    rngs={"noise": jax.random.PRNGKey(0)})
  expect = 0.5 * out["icl_loss"] + 2.0 * out["mtm_loss"] + out["mlm_loss"]
  np.testing.assert_allclose(out["loss"], expect, rtol=1e-6)
  assert set(params) == {"ctr", "plm", "ctr_proj", "txt_proj", "mtm_head",
                         "nce", "mlm_head"}
  no_icl = flip_lib.FlipPretrainModel(tiny_config(icl_enabled=False))
  p2 = init(no_icl, batch)
  assert "ctr_proj" not in p2 and "txt_proj" not in p2
  out2 = no_icl.apply({"params": p2}, batch, consts(),
                      rngs={"noise": jax.random.PRNGKey(0)})
  assert "icl_loss" not in out2
  only_mlm = flip_lib.FlipPretrainModel(
      tiny_config(icl_enabled=False, mtm_enabled=False))
  p3 = init(only_mlm, batch)
  assert set(p3) == {"ctr", "plm", "mlm_head"}
  # The pretraining backbone never creates the finetuning-only tables.
  assert "linear" not in p3["ctr"] and "head" not in p3["ctr"]


def test_mtm_attention_ignores_padding():
  """Changing states at padded positions leaves the MTM loss unchanged."""
  batch = random_batch()
  model = flip_lib.FlipPretrainModel(
      tiny_config(icl_enabled=False, mlm_enabled=False))
  params = init(model, batch)
  other = dict(batch)
  other["input_ids"] = np.where(batch["attention_mask"] > 0,
                                batch["input_ids"], 7).astype(np.int32)
  rngs = {"noise": jax.random.PRNGKey(3)}
  a = model.apply({"params": params}, batch, consts(), rngs=rngs)
  b = model.apply({"params": params}, other, consts(), rngs=rngs)
  np.testing.assert_allclose(a["mtm_loss"], b["mtm_loss"], rtol=1e-6)


def _run_steps(mesh_axes, batch, num_steps=2, cfg=None, micro_batches=1,
               tx=None):
  cfg = cfg or tiny_config()
  model = flip_lib.FlipPretrainModel(cfg)
  mesh = sharding.make_mesh(mesh_axes, jax.devices()[:int(np.prod(
      [s for _, s in mesh_axes]))])
  rules = sharding.DEFAULT_RULES
  tx = tx or optax.adamw(1e-2, weight_decay=1e-3)
  c = consts()

  def init_variables(rng):
    return model.init({"params": rng, "dropout": rng, "noise": rng}, batch,
                      c)

  si = setup.sharded_state_init(
      init_variables,
      lambda p, ms, r: state_lib.create_train_state(p, tx, r, ms), tx,
      mesh, rules)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state = si.init(jax.random.PRNGKey(0))
    batch_sh = {k: sharding.batch_sharding(mesh, rules, v.ndim)
                for k, v in batch.items()}
    const_sh = {k: sharding.replicated(mesh) for k in c}
    step = jax.jit(functools.partial(steps.pretrain_step, model=model, tx=tx,
                                     micro_batches=micro_batches),
                   in_shardings=(si.shardings, batch_sh, const_sh),
                   out_shardings=(si.shardings, sharding.replicated(mesh)),
                   donate_argnums=0)
    gb = sharding.global_batch(batch, mesh, rules)
    gc = {k: jax.device_put(v, sharding.replicated(mesh)) for k, v in c.items()}
    losses = []
    for _ in range(num_steps):
      state, metrics = step(state, gb, gc)
      losses.append(float(metrics["train/loss"]))
  return losses, jax.device_get(state.params), si.shardings


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
def test_sharded_step_equals_single_device():
  batch = random_batch(batch=8)
  l1, p1, _ = _run_steps([("data", 1), ("fsdp", 1), ("tensor", 1)], batch)
  l8, p8, sh = _run_steps([("data", 2), ("fsdp", 2), ("tensor", 2)], batch)
  np.testing.assert_allclose(l1, l8, rtol=1e-5)
  # AdamW normalises updates, so float reduction-order noise in tiny
  # gradients can move a weight by ~lr * 1e-3.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=2e-5), p1, p8)
  # The rules really shard something: embedding rows and PLM mlp/heads.
  specs = [s.spec for s in jax.tree.leaves(sh.params)]
  assert any(any(ax is not None for ax in spec) for spec in specs)
