"""Tiny FLIP pretraining fixtures shared by the step-level tests.

Not a test module (pytest collects ``*_test.py`` only). Two kinds of fixture:

* hand-made: ``tiny_config`` (a ``FlipConfig``), ``random_batch`` (a masked
  batch drawn directly) and ``consts`` (``make_consts`` of ``feature_map``,
  so it carries ``log_q_field`` and the per-field noise can run);
* config-driven: ``config_task`` builds a ``FlipPretrainTask`` from
  ``experiments/configs/flip_pretrain.py`` (tiny sizes) on in-memory columns,
  with a stub PLM module and tokenizer, so that a config option travels
  config -> ``flip_config`` -> model and the masks come from the task's own
  batch transform (the data pipeline).
"""
from __future__ import annotations

import dataclasses
import functools
import types

import jax
import numpy as np
import optax
import pytest
from flax import linen as nn

from experiments.configs import flip_pretrain as flip_pretrain_config
from flip_jax import sharding
from flip_jax import sharding_rules
from flip_jax.data import features
from flip_jax.methods.flip import pretrain
from flip_jax.methods.flip import pretrain_model as flip_lib
from flip_jax.models import ctr as ctr_lib
from flip_jax.models import plm as plm_lib
from flip_jax.train import init as init_lib
from flip_jax.train import state as state_lib
from flip_jax.train import steps
from flip_jax.train import task as task_lib

F, FIELD_SIZE, V, L, B = 4, 15, 50, 12, 8
N = F * FIELD_SIZE
MASK_TOKEN = 3
PAD, CLS, SEP = 0, 1, 2
SPECIAL_IDS = (PAD, CLS, SEP, MASK_TOKEN)

MESH_ONE = [("data", 1), ("fsdp", 1), ("tensor", 1)]
MESH_EIGHT_MIXED = [("data", 2), ("fsdp", 2), ("tensor", 2)]
MESH_EIGHT_DATA = [("data", 8), ("fsdp", 1), ("tensor", 1)]
needs_8_devices = pytest.mark.skipif(jax.device_count() < 8,
                                     reason="needs 8 (fake) devices")

# The metric keys of every pretraining step with the three losses on.
STEP_KEYS = frozenset({
    "train/loss", "train/grad_norm", "train/icl_loss", "train/icl_acc",
    "train/mtm_loss", "train/mtm_acc", "train/mlm_loss",
    "train/mlm_masked_tokens"})


def plm_config(dropout: float = 0.1) -> plm_lib.PLMConfig:
  return plm_lib.PLMConfig(
      model_type="bert", vocab_size=V, hidden_size=16, num_layers=1,
      num_heads=2, intermediate_size=32, max_position_embeddings=32,
      type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=PAD,
      hidden_dropout=dropout, attention_dropout=dropout)


def tiny_config(**overrides) -> flip_lib.FlipConfig:
  ctr_cfg = ctr_lib.CTRConfig(name="dcnv2", num_features=N, num_fields=F,
                              embed_dim=8, dnn_hidden=(16, 8), low_rank=4,
                              num_experts=2)
  kw = dict(ctr=ctr_cfg, plm=plm_config(), num_features=N, num_fields=F,
            proj_dim=8, mlm_max_masked=6, mtm_num_negatives=5, mtm_field_dim=8)
  kw.update(overrides)
  return flip_lib.FlipConfig(**kw)


def no_dropout_config(**kw) -> flip_lib.FlipConfig:
  """``tiny_config`` with every dropout rate 0 (full softmax unless given)."""
  kw.setdefault("mtm_loss", "full")
  cfg = tiny_config(proj_dropout=0.0, mlm_head_dropout=0.0, **kw)
  assert cfg.ctr.dropout == 0.0
  return dataclasses.replace(cfg, plm=plm_config(dropout=0.0))


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
      "mtm_positions": pos.astype(np.int32),
      "mtm_labels": labels.astype(np.int32),
      "mtm_weight": np.ones((batch, 1), np.float32),
      "mlm_input_ids": mlm_ids.astype(np.int32),
      "mlm_labels": mlm_labels.astype(np.int32),
  }


def counts() -> np.ndarray:
  """Feature counts [N]; each field's OOV (local 0) and MASK (1) never seen."""
  c = np.random.RandomState(1).randint(1, 50, size=N).astype(np.int64)
  c[np.arange(F) * FIELD_SIZE] = 0      # OOV
  c[np.arange(F) * FIELD_SIZE + 1] = 0  # MASK
  return c


def feature_map() -> features.FeatureMap:
  """F fields of FIELD_SIZE - 2 values each (+ OOV, MASK), ``counts()``."""
  vocabs = [np.array([f"f{f}v{j}" for j in range(FIELD_SIZE - 2)],
                     dtype=object) for f in range(F)]
  fm = features.FeatureMap(tuple(f"f{f}" for f in range(F)),
                           tuple(f"field {f}" for f in range(F)), vocabs,
                           counts())
  assert fm.num_features == N
  np.testing.assert_array_equal(fm.offsets, np.arange(F) * FIELD_SIZE)
  return fm


def consts() -> dict[str, np.ndarray]:
  """The step's constants as production makes them (``make_consts``).

  ``log_q_field`` (the per-field noise's NCE correction) is included: the
  old hand-written fixture lacked it, so ``mtm_noise='per_field'`` raised a
  KeyError at ``consts['log_q_field']`` (pretrain_model.py) with it.
  """
  return flip_lib.make_consts(feature_map())


def init_boxed(model, batch, seed=0, c=None):
  """``model.init(...)['params']`` (boxed), not jitted (for eval_shape)."""
  c = consts() if c is None else c
  rng = jax.random.PRNGKey(seed)
  return model.init({"params": rng, "dropout": rng, "noise": rng}, batch,
                    c)["params"]


def init(model, batch, seed=0, c=None):
  """Unboxed params of ``model`` (init jitted: many small ops otherwise)."""
  c = consts() if c is None else c
  fn = jax.jit(lambda rng: model.init(
      {"params": rng, "dropout": rng, "noise": rng}, batch, c)["params"])
  return nn.meta.unbox(fn(jax.random.PRNGKey(seed)))


@functools.lru_cache(maxsize=None)
def _jitted_apply(model, static_kwargs):
  kw = dict(static_kwargs)
  return jax.jit(lambda p, b, c, rngs: model.apply({"params": p}, b, c,
                                                   rngs=rngs, **kw))


def apply(model, params, batch, c, *, rngs, **kwargs):
  """``model.apply({'params': params}, batch, c, rngs=rngs, **kwargs)``.

  Jitted once per (model, kwargs): one compile instead of an eager
  op-by-op first pass, and none for a second batch of the same shapes.
  """
  return _jitted_apply(model, tuple(sorted(kwargs.items())))(
      params, batch, c, rngs)


@functools.lru_cache(maxsize=None)
def tiny_params():
  """Params of ``tiny_config()`` (init once per process; read-only).

  Loss weights, dropout rates, the MTM loss / noise and the fast / official
  switches do not change the params.
  """
  return init(flip_lib.FlipPretrainModel(tiny_config()), random_batch())


def whole_batch_grads(model, params, batch, c, rngs):
  """Loss terms and grads of the whole batch in one pass (jitted)."""
  def loss_fn(p):
    out = model.apply({"params": p}, batch, c, deterministic=False, rngs=rngs)
    return out["loss"], out
  (_, out), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
  return out, grads


def assert_close(out_a, g_a, out_b, g_b, keys, rtol=2e-5, atol=1e-6):
  """Metrics ``keys`` to (rtol, atol); grads to (1e-4, 1e-6)."""
  for k in keys:
    np.testing.assert_allclose(out_a[k], out_b[k], rtol=rtol, atol=atol,
                               err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=1e-4, atol=1e-6), g_a, g_b)


def base_config(preset: str = "tiny"):
  """The real pretraining config with the tiny fixture's sizes."""
  cfg = flip_pretrain_config.get_config(f"dataset=synthetic,preset={preset}")
  cfg.model.ctr.update(embed_dim=8, dnn_hidden=(16, 8), low_rank=4,
                       num_experts=2)
  cfg.data.max_length = 16
  cfg.pretrain.proj_dim = 8
  cfg.pretrain.mtm.num_negatives = 5
  cfg.pretrain.mtm.field_dim = 8
  return cfg


def with_options(config=None, **options):
  """``base_config()`` with dotted options set: ``{'pretrain.mtm.loss': ..}``.

  Keyword names use ``__`` for the dots (``pretrain__mtm__loss='full'``).
  """
  config = base_config() if config is None else config
  for name, value in options.items():
    *parents, leaf = name.split("__")
    node = config
    for part in parents:
      node = node[part]
    if leaf not in node:
      raise KeyError(f"{name}: no such config field")
    node[leaf] = value
  return config


def task_for(model, config=None) -> pretrain.FlipPretrainTask:
  """A pretraining task built around ``model`` (no data)."""
  return pretrain.FlipPretrainTask(config if config is not None
                                   else base_config(), model)


class StubTokenizer:
  """What ``FlipPretrainTask``'s masking transform reads from a tokenizer."""
  mask_token_id = MASK_TOKEN
  all_special_ids = list(SPECIAL_IDS)

  def __len__(self):
    return V


def text_columns(num_rows: int, max_length: int, seed: int = 0
                 ) -> dict[str, np.ndarray]:
  """Rows as the tokenizer lays them out: [CLS] (name value+)* [SEP] pad.

  Each field contributes a template word (token_field -1) and 1-2 value
  tokens (token_field f); ids are global (field offset + local 2..).
  """
  rs = np.random.RandomState(seed)
  ids = (np.arange(F) * FIELD_SIZE
         + rs.randint(2, FIELD_SIZE, size=(num_rows, F))).astype(np.int32)
  input_ids = np.full((num_rows, max_length), PAD, np.int32)
  token_field = np.full((num_rows, max_length), -1, np.int32)
  attn = np.zeros((num_rows, max_length), np.int32)
  for i in range(num_rows):
    toks, fields = [CLS], [-1]
    for f in range(F):
      toks.append(5 + f)
      fields.append(-1)
      for _ in range(rs.randint(1, 3)):
        toks.append(rs.randint(10, V))
        fields.append(f)
    toks.append(SEP)
    fields.append(-1)
    assert len(toks) <= max_length
    input_ids[i, :len(toks)] = toks
    token_field[i, :len(toks)] = fields
    attn[i, :len(toks)] = 1
  return {"ids": ids, "input_ids": input_ids, "attention_mask": attn,
          "token_field": token_field,
          "label": np.zeros(num_rows, np.float32),
          "row_id": np.arange(num_rows, dtype=np.int32)}


@dataclasses.dataclass
class ConfigTask:
  """A task built from a config, with everything one step needs."""
  task: pretrain.FlipPretrainTask
  data: task_lib.TaskData
  batch: dict
  consts: dict
  params: dict


def config_task(config=None, *, batch_size: int = B, num_rows: int = 32,
                seed: int = 0, params=None) -> ConfigTask:
  """``FlipPretrainTask(config)`` on in-memory data: model, batch, params.

  The model comes from ``task.build_model`` (``flip_config`` and the MLM
  head size of ``mlm_max_masked``), the batch from ``task.example_batch``
  (the pipeline with the task's masking transform), the constants from
  ``data.consts`` and the params from ``task.init_variables`` (or
  ``params``: the options under test do not change the params' tree, and an
  init is a compile).
  """
  config = base_config() if config is None else config
  task = pretrain.FlipPretrainTask(config)
  data = task.task_data(
      text_columns(num_rows, config.data.max_length, seed), feature_map(),
      {"plm_module": types.SimpleNamespace(config=plm_config()),
       "plm_params": None, "tokenizer": StubTokenizer()})
  task.build_model(data)
  batch = task.example_batch(data, batch_size)
  c = data.consts
  if params is None:
    variables = jax.jit(functools.partial(
        task.init_variables, example=batch, consts=c))(
            jax.random.PRNGKey(seed))
    params, model_state = state_lib.split_variables(nn.meta.unbox(variables))
    assert not model_state
  return ConfigTask(task, data, batch, c, params)


@functools.lru_cache(maxsize=None)
def config_task_params():
  """Params of ``config_task()`` (default config; once per process)."""
  return config_task().params


def one_step(ct: ConfigTask, tx=None, micro_batches: int = 1, seed: int = 0):
  """One jitted ``steps.train_step`` of a ConfigTask: (state, host metrics)."""
  tx = tx or optax.adamw(1e-2)
  state = state_lib.create_train_state(ct.params, tx,
                                       jax.random.PRNGKey(seed))
  step = jax.jit(functools.partial(steps.train_step, task=ct.task,
                                   micro_batches=micro_batches))
  state, metrics = step(state, ct.batch, ct.consts)
  return state, jax.device_get(metrics)


def step_with_options(**options):
  """One SGD ``train_step`` of ``config_task`` with ``with_options(**options)``.

  The params are ``config_task_params()``: the pretraining options do not
  change the params' tree (a missing param would fail the apply).

  Returns:
    (the ConfigTask, host metrics of the step).
  """
  ct = config_task(with_options(**options), params=config_task_params())
  assert not ct.task.config_errors()
  state, metrics = one_step(ct, tx=optax.sgd(0.1))
  assert int(state.step) == 1
  return ct, metrics


def assert_finite_step(metrics, keys):
  """The step's metrics are exactly ``keys``, all finite, accuracies in
  [0, 1], and the gradient is not zero."""
  assert set(metrics) == set(keys)
  for k, v in metrics.items():
    assert np.isfinite(v), (k, v)
  for k in ("train/mtm_acc", "train/icl_acc"):
    if k in metrics:
      assert 0.0 <= metrics[k] <= 1.0, (k, metrics[k])
  assert metrics["train/grad_norm"] > 0


def run_steps(mesh_axes, batch, num_steps=2, cfg=None, micro_batches=1,
              tx=None, details=False):
  """``num_steps`` sharded train steps as the loop jits them.

  Returns:
    (losses per step, host params after the steps, state shardings); with
    ``details`` a dict with those (``losses``, ``params``, ``shardings``)
    and ``init_params`` (host params before the first step) and
    ``metrics`` (host metrics per step).
  """
  cfg = cfg or tiny_config()
  model = flip_lib.FlipPretrainModel(cfg)
  task = task_for(model)
  mesh = sharding.make_mesh(mesh_axes, jax.devices()[:int(np.prod(
      [s for _, s in mesh_axes]))])
  rules = sharding_rules.DEFAULT_RULES
  tx = tx or optax.adamw(1e-2, weight_decay=1e-3)
  c = consts()

  si = init_lib.sharded_state_init(
      lambda rng: task.init_variables(rng, batch, c),
      lambda p, ms, r: state_lib.create_train_state(p, tx, r, ms), tx,
      mesh, rules)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state = si.init(jax.random.PRNGKey(0))
    init_params = jax.device_get(state.params)
    batch_sh = {k: sharding.batch_sharding(mesh, rules, v.ndim)
                for k, v in batch.items()}
    const_sh = {k: sharding.replicated(mesh) for k in c}
    step = jax.jit(functools.partial(steps.train_step, task=task,
                                     micro_batches=micro_batches),
                   in_shardings=(si.shardings, batch_sh, const_sh),
                   out_shardings=(si.shardings, sharding.replicated(mesh)),
                   donate_argnums=0)
    gb = sharding.global_batch(batch, mesh, rules)
    gc = {k: jax.device_put(v, sharding.replicated(mesh)) for k, v in c.items()}
    losses, history = [], []
    for _ in range(num_steps):
      state, metrics = step(state, gb, gc)
      history.append(jax.device_get(metrics))
      losses.append(float(metrics["train/loss"]))
  params = jax.device_get(state.params)
  if not details:
    return losses, params, si.shardings
  return {"losses": losses, "params": params, "shardings": si.shardings,
          "init_params": init_params, "metrics": history}


# ------------------------------------------- micro-batch == whole batch
FORMS = {"fast": {},
         "official": dict(share_unmasked_pass=False, mlm_masked_only=False)}


def padded_batch():
  """``random_batch(batch=8)`` with a padding MTM slot and a row with no MLM
  label (the micro-batches' shares must use the global denominators)."""
  batch = random_batch(batch=8)
  batch["mtm_weight"][3] = 0.0        # a padding slot: weighted means
  batch["mlm_labels"][5] = -100       # a row with nothing masked
  return batch


@functools.lru_cache(maxsize=None)
def _whole_batch_of_form(form):
  """The whole batch's terms and grads, once per form (num 2 and 4 share)."""
  model = flip_lib.FlipPretrainModel(no_dropout_config(**FORMS[form]))
  rngs = {"dropout": jax.random.PRNGKey(1), "noise": jax.random.PRNGKey(2)}
  return whole_batch_grads(model, tiny_params(), padded_batch(),
                           consts(), rngs)


def check_micro_batched_equals_whole_batch_without_dropout(num, form):
  """``cached_icl_grads`` over ``num`` micro-batches == the whole batch."""
  kw = FORMS[form]
  batch = padded_batch()
  model = flip_lib.FlipPretrainModel(no_dropout_config(**kw))
  params = tiny_params()
  c = consts()
  rngs = {"dropout": jax.random.PRNGKey(1), "noise": jax.random.PRNGKey(2)}
  out1, g1 = _whole_batch_of_form(form)
  outm, gm, _ = jax.jit(functools.partial(
      pretrain.cached_icl_grads, model, num=num))(params, batch, c, rngs)
  assert_close(out1, g1, outm, gm, ("loss", "icl_loss", "icl_acc",
                                    "mtm_loss", "mtm_acc", "mlm_loss",
                                    "mlm_masked_tokens"))
