"""FG-BERT pretraining as a task (spec B2, B7.2): trains, checkpoints, stops.

Data: the windows of the *train* events only (valid and test never reach
pretraining), gathered and masked per batch by the input pipeline. The item
noise is the train events' item distribution (a replicated constant).
``sequence.attributes`` = ('item',) gives the ID-only BERT4Rec-style
pretraining of the ablation. Micro-batches split the loss exactly (every
term is a mean over the global batch's masked slots).
"""
from __future__ import annotations

import numpy as np
from absl import logging

from flip_jax import losses
from flip_jax.methods.srp4ctr import data as data_lib
from flip_jax.methods.srp4ctr import fgbert
from flip_jax.train import loss_task
from flip_jax.train import state as state_lib
from flip_jax.train import task as task_lib
from flip_jax.train import validate

PRETRAIN_KEYS = ("mlm_hist", "hist_mask", "mlm_positions", "mlm_labels",
                 "mlm_weight")


def pretrain_config(config, seq: fgbert.SeqConfig) -> fgbert.PretrainConfig:
  """Freezes ``config.pretrain`` (model boundary)."""
  p = config.pretrain
  return fgbert.PretrainConfig(
      seq=seq, item_loss=p.item_loss, num_negatives=p.num_negatives,
      tie_output=p.tie_output,
      attribute_weights=tuple(p.attribute_weights))


def config_errors(config) -> list[str]:
  """Problems with the fields both SRP4CTR tasks read."""
  errors: list[str] = []
  s, m = config.sequence, config.model
  for name in ("max_length", "pretrain_stride", "min_events"):
    validate.positive(errors, f"sequence.{name}", s[name])
  for name in ("hidden", "heads", "layers", "mlp"):
    validate.positive(errors, f"model.seq.{name}", m.seq[name])
  if isinstance(m.seq.hidden, int) and isinstance(m.seq.heads, int) and (
      m.seq.heads > 0 and m.seq.hidden % m.seq.heads):
    errors.append(f"model.seq.heads={m.seq.heads} does not divide "
                  f"model.seq.hidden={m.seq.hidden}")
  validate.one_of(errors, "model.seq.act", m.seq.act, ("gelu", "relu"))
  validate.one_of(errors, "model.dtype", m.dtype, validate.DTYPES)
  if not list(s.attributes) or list(s.attributes)[0] != "item":
    errors.append(f"sequence.attributes={list(s.attributes)}: 'item' first")
  return errors


class Srp4ctrPretrainTask(loss_task.LossTask):
  """Multi-attribute masked prediction on train histories (no evaluation)."""
  name = "srp4ctr_pretrain"
  rng_streams = ("dropout", "noise")

  def config_errors(self):
    errors = config_errors(self.config)
    p = self.config.pretrain
    validate.one_of(errors, "pretrain.item_loss", p.item_loss,
                    fgbert.ITEM_LOSSES)
    validate.positive(errors, "pretrain.num_negatives", p.num_negatives)
    if not 0 < p.mask_prob < 1:
      errors.append(f"pretrain.mask_prob={p.mask_prob!r}: expected (0, 1)")
    return errors

  # ------------------------------------------------------------------ data
  def load_data(self, workdir):
    prepared, store = data_lib.load_store(self.config, workdir)
    cols = data_lib.pretrain_columns(self.config, store)
    logging.info("FG-BERT pretraining: %d windows of the train events of %d "
                 "users (attributes %s)", len(cols["label"]),
                 store.num_users, store.attributes)
    return task_lib.TaskData(
        train=cols, eval_splits={}, feature_map=prepared.feature_map,
        extra={"store": store}, train_keys=PRETRAIN_KEYS,
        batch_transform=data_lib.PretrainTransform(
            store.tokens, self.config.sequence.max_length,
            self.config.pretrain.mask_prob),
        consts={"item_log_q": data_lib.item_log_q(store)})

  # ----------------------------------------------------------------- model
  def build_model(self, data):
    seq = data_lib.seq_config(self.config, data.extra["store"])
    self.model = fgbert.FGBertPretrainModel(pretrain_config(self.config, seq))
    return self.model

  def example_batch(self, data, n):
    idx = np.arange(n) % len(data.train["label"])
    batch = {k: np.asarray(v)[idx] for k, v in data.train.items()}
    batch = data.batch_transform(batch, seed=0, epoch=0, index=idx)
    return {k: batch[k] for k in PRETRAIN_KEYS}

  def init_variables(self, rng, example, consts):
    return self.model.init({"params": rng, "dropout": rng, "noise": rng},
                           example, consts)

  def post_init(self, params, model_state, put, data):
    if self.config.pretrain.item_loss == "nce":
      counts = data.extra["store"].train_counts(0)
      params = put(params, ("bias_item",),
                   np.asarray(losses.nce_bias_init(counts)))
      return params, model_state, "scratch (item bias from the train counts)"
    return params, model_state, "scratch"

  # ------------------------------------------------------------------ loss
  def loss_norms(self, batch):
    return losses.weight_denominator(batch["mlm_weight"])

  def data_loss(self, params, model_state, batch, consts, rngs, norms=None):
    out, model_state = state_lib.apply_train(
        self.model, params, model_state, batch, consts, deterministic=False,
        rngs=rngs, norms=norms)
    loss = out.pop("loss")
    return loss, (out, model_state)

