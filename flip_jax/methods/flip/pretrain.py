"""FLIP pretraining as a task: MLM + MTM + ICL in one sharded step.

Data: train + valid rows (no labels, as the official 90 %), tokenized, with
the MLM / MTM masks drawn on the host by the input pipeline. Fresh runs
take the PLM from its public weights and the NCE bias from the feature
counts. With micro-batches the gradient is the global batch's: MTM and MLM
split exactly, ICL (whose negatives are the whole global batch) by cached
gradients (``grads``).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from flip_jax import losses
from flip_jax.data import masking as masking_lib
from flip_jax.data import pipeline
from flip_jax.methods.flip import pretrain_model as flip_lib
from flip_jax.train import inputs
from flip_jax.train import loss_task
from flip_jax.train import microbatch
from flip_jax.train import state as state_lib
from flip_jax.train import task as task_lib
from flip_jax.train import validate

# Batch keys the pretraining model reads; everything else stays on the host.
PRETRAIN_KEYS = ("ids", "input_ids", "attention_mask", "mtm_ids",
                 "mtm_positions", "mtm_labels", "mtm_weight", "mlm_input_ids",
                 "mlm_labels")
# Columns the stream gathers (the masks are computed from them).
_COLUMNS = ("ids", "input_ids", "attention_mask", "token_field")
# What the ICL views read (the held-out monitor batch).
_HELDOUT_KEYS = ("ids", "input_ids", "attention_mask")


def max_masked_tokens(token_field: np.ndarray, num_fields: int,
                      ratio: float) -> int:
  """Largest number of MLM-masked tokens any row can get (FLIP rule).

  A row masks its m_t fields with the most tokens at worst; the fast MLM
  form sizes its per-row gather with this, so no masked token is dropped.
  """
  m_t = masking_lib.num_masked_fields(num_fields, ratio)
  tf = np.asarray(token_field)
  counts = np.stack([(tf == f).sum(axis=1) for f in range(num_fields)], 1)
  worst = np.sort(counts, axis=1)[:, -m_t:].sum(axis=1)
  return max(1, int(worst.max()))


def mlm_max_masked(config, columns, num_fields: int) -> int:
  """``pretrain.mlm.max_masked``, or (-1) the most any row can get."""
  max_masked = config.pretrain.mlm.max_masked
  if max_masked > 0:
    return max_masked
  if config.data.mlm_rule == "field":
    max_masked = max_masked_tokens(columns["token_field"], num_fields,
                                   config.data.text_mask_ratio)
  else:
    max_masked = max(1, int(np.ceil(1.5 * config.data.token_mask_prob
                                    * config.data.max_length)))
  max_masked = min(max_masked, np.shape(columns["input_ids"])[1])
  logging.info("MLM head on at most %d masked positions per row", max_masked)
  return max_masked


def flip_config(config, plm_config, feature_map, max_masked: int
                ) -> flip_lib.FlipConfig:
  """Freezes the ConfigDict into the model's dataclass (model boundary)."""
  p = config.pretrain
  return flip_lib.FlipConfig(
      ctr=inputs.ctr_config(config.model, feature_map),
      plm=plm_config,
      num_features=feature_map.num_features,
      num_fields=feature_map.num_fields,
      proj_dim=p.proj_dim, proj_dropout=p.proj_dropout,
      icl_enabled=p.icl.enabled, icl_weight=p.icl.weight,
      icl_temperature=p.icl.temperature, icl_normalize=p.icl.normalize,
      mlm_enabled=p.mlm.enabled, mlm_weight=p.mlm.weight,
      mlm_head_dropout=p.mlm.head_dropout, mlm_masked_only=p.mlm.masked_only,
      mlm_max_masked=max_masked,
      mtm_enabled=p.mtm.enabled, mtm_weight=p.mtm.weight, mtm_loss=p.mtm.loss,
      mtm_num_negatives=p.mtm.num_negatives, mtm_noise=p.mtm.noise,
      mtm_attn_padding_mask=p.mtm.attn_padding_mask,
      mtm_attn_scale=p.mtm.attn_scale, mtm_field_dim=p.mtm.field_dim,
      share_unmasked_pass=p.share_unmasked_pass,
      dtype=inputs.DTYPES[config.model.dtype],
      plm_remat=config.model.plm.remat)


class FlipPretrainTask(loss_task.LossTask):
  """FLIP pretraining (no evaluation splits: trains, checkpoints, stops)."""
  name = "flip_pretrain"

  @classmethod
  def reads_text(cls, config) -> bool:
    return True
  rng_streams = ("dropout", "noise")

  def config_errors(self):
    p = self.config.pretrain
    errors = (inputs.model_errors(self.config.model)
              + inputs.data_errors(self.config.data))
    validate.one_of(errors, "pretrain.mtm.loss", p.mtm.loss,
                    ("nce", "sampled", "full"))
    validate.one_of(errors, "pretrain.mtm.noise", p.mtm.noise,
                    ("global", "per_field"))
    validate.one_of(errors, "data.mlm_rule", self.config.data.mlm_rule,
                    ("field", "token"))
    for name in ("icl", "mtm", "mlm"):
      validate.positive(errors, f"pretrain.{name}.weight",
                        p[name].weight, zero_ok=True)
    if not (p.icl.enabled or p.mtm.enabled or p.mlm.enabled):
      errors.append("pretrain.{icl,mtm,mlm}.enabled: at least one loss must "
                    "be enabled")
    validate.positive(errors, "pretrain.icl.temperature", p.icl.temperature)
    validate.positive(errors, "pretrain.heldout_rows", p.heldout_rows,
                      zero_ok=True)
    validate.positive(errors, "pretrain.mtm.num_negatives",
                      p.mtm.num_negatives)
    return errors

  # ------------------------------------------------------------------ data
  def load_data(self, workdir):
    config = self.config
    plm_module, plm_params, tokenizer = inputs.load_plm(config.model)
    prepared, columns = inputs.pretraining_columns(config, workdir,
                                                   tokenizer, _COLUMNS)
    return self.task_data(
        columns, prepared.feature_map,
        {"plm_module": plm_module, "plm_params": plm_params,
         "tokenizer": tokenizer},
        heldout=self._heldout(prepared, tokenizer))

  def task_data(self, columns, feature_map, extra, heldout=None
                ) -> task_lib.TaskData:
    """TaskData of the pretraining columns (no evaluation splits): the
    masking transform of ``extra['tokenizer']``, the NCE constants of
    ``feature_map`` and ``heldout`` as the monitor batch."""
    return task_lib.TaskData(
        train=columns, eval_splits={}, feature_map=feature_map, extra=extra,
        train_keys=PRETRAIN_KEYS,
        batch_transform=self._masking(extra["tokenizer"], feature_map),
        consts=flip_lib.make_consts(feature_map), monitor_batch=heldout)

  def _heldout(self, prepared, tokenizer):
    """The ICL monitor's fixed batch: the first ``pretrain.heldout_rows``
    rows of the test split (rows pretraining never reads; their labels are
    not used), or None (ICL off, no test split, or heldout_rows 0)."""
    n = self.config.pretrain.heldout_rows
    if n <= 0 or not self.config.pretrain.icl.enabled:
      return None
    test = inputs.tokenized(self.config, prepared, tokenizer).get("test")
    if test is None or not len(test["ids"]):
      return None
    return {k: np.asarray(test[k][:n]) for k in _HELDOUT_KEYS}

  def _masking(self, tokenizer, feature_map):
    """The MLM / MTM masks drawn per training batch (host side)."""
    return masking_lib.masking_transform(
        masking_lib.MaskingConfig.from_config(self.config.data),
        mask_token_id=tokenizer.mask_token_id, feature_map=feature_map,
        vocab_size=len(tokenizer),
        special_token_ids=list(tokenizer.all_special_ids))

  # ----------------------------------------------------------------- model
  def build_model(self, data):
    fm = data.feature_map
    max_masked = mlm_max_masked(self.config, data.train, fm.num_fields)
    self.model = flip_lib.FlipPretrainModel(flip_config(
        self.config, data.extra["plm_module"].config, fm, max_masked))
    return self.model

  def example_batch(self, data, n):
    it = pipeline.train_iterator(
        data.train, global_batch_size=n, seed=0, process_index=0,
        process_count=1, prefetch_buffer_size=0,
        transform=data.batch_transform)
    return {k: v for k, v in next(it).items() if k in PRETRAIN_KEYS}

  def monitor(self, variables, batch, consts):
    """ICL on the held-out batch in eval mode (no dropout): its loss (chance
    = ln B) and top-1 retrieval accuracy (chance = 1/B)."""
    del consts
    cfg = self.model.config
    z_r, z_t = self.model.apply(variables, batch, deterministic=True,
                                method=self.model.icl_views)
    loss, logits = losses.icl_loss(z_r, z_t, temperature=cfg.icl_temperature,
                                   normalize=cfg.icl_normalize)
    return {"icl_loss": loss, "icl_acc": losses.icl_accuracy(logits),
            "icl_rows": jnp.float32(z_r.shape[0])}

  def init_variables(self, rng, example, consts):
    return self.model.init({"params": rng, "dropout": rng, "noise": rng},
                           example, consts)

  def post_init(self, params, model_state, put, data):
    params = put(params, ("plm",), data.extra["plm_params"])
    if "nce" in params:
      bias = np.asarray(losses.nce_bias_init(
          np.asarray(data.feature_map.counts)))
      params = put(params, ("nce", "bias"), bias)
    return params, model_state, (
        f"PLM from {self.config.model.plm.name}, the rest from scratch")

  # ------------------------------------------------------------------ loss
  def data_loss(self, params, model_state, batch, consts, rngs, norms=None):
    out, model_state = state_lib.apply_train(
        self.model, params, model_state, batch, consts, deterministic=False,
        rngs=rngs)
    loss = out.pop("loss")
    return loss, (out, model_state)

  def grads(self, params, model_state, batch, consts, rngs, *,
            micro_batches):
    if micro_batches <= 1:
      return super().grads(params, model_state, batch, consts, rngs,
                           micro_batches=1)
    return cached_icl_grads(self.model, params, batch, consts, rngs,
                            num=micro_batches, model_state=model_state)


def cached_icl_grads(model, params, batch, consts, rngs, *, num: int,
                     model_state=None):
  """The pretraining loss's metrics and grads, accumulated over micro-batches.

  MTM and MLM are sums over examples and split exactly (each micro-batch
  contributes its share of the global means, ``flip.loss_norms``). ICL's
  negatives are the whole global batch, so it uses cached gradients
  (GradCache, Gao et al. 2021): (1) the ICL views of every micro-batch are
  computed without keeping activations, (2) ICL and its gradient w.r.t. the
  views are computed on the global batch, (3) each micro-batch is run again
  with grads, ICL entering as the views dotted with their cached gradient.
  Step (3) draws the same dropout keys as (1), so the gradient equals the
  global batch's; the price is one more forward of the unmasked pass.

  A BatchNorm backbone normalises each micro-batch with its own statistics
  (as gradient accumulation does in PyTorch), so its gradient is not the
  whole batch's; (1) and (3) see the same micro-batch and agree. Its
  running statistics (``model_state``) are updated by (3) only, micro-batch
  after micro-batch.

  Returns:
    (metrics dict as ``FlipPretrainModel.__call__`` returns it, grads, the
    updated ``model_state``).
  """
  cfg = model.config
  micro = microbatch.split(batch, num)

  def rngs_of(i):
    return {k: jax.random.fold_in(v, i) for k, v in rngs.items()}

  metrics = {}
  cot = None
  if cfg.icl_enabled:
    def views(x):
      mb, i = x
      return state_lib.apply_train(
          model, params, model_state, microbatch.shard_rows(mb),
          deterministic=False, rngs=rngs_of(i), method=model.icl_views)[0]

    z_r, z_t = microbatch.merge(jax.lax.map(views, (micro, jnp.arange(num))))

    icl_fn = functools.partial(losses.icl_loss,
                               temperature=cfg.icl_temperature,
                               normalize=cfg.icl_normalize)
    (icl, logits), cot = jax.value_and_grad(icl_fn, argnums=(0, 1),
                                            has_aux=True)(z_r, z_t)
    cot = microbatch.split(
        jax.tree.map(lambda g: cfg.icl_weight * g.astype(jnp.float32), cot),
        num)
    metrics = {"icl_loss": icl, "icl_acc": losses.icl_accuracy(logits)}
  norms = flip_lib.loss_norms(batch, cfg)

  def chunk_loss(p, ms, x, i):
    mb, c = x
    out, ms = state_lib.apply_train(
        model, p, ms, mb, consts, deterministic=False, rngs=rngs_of(i),
        icl_cotangents=c, norms=norms)
    # out["loss"] = MTM and MLM shares + the ICL views . cached gradient.
    return out.pop("loss"), (out, ms)

  aux, grads, model_state = microbatch.accumulate(
      chunk_loss, params, (micro, cot), num, state=model_state or {})
  metrics.update(aux)
  metrics["loss"] = flip_lib.total_loss(metrics, cfg)
  return metrics, grads, model_state
