"""PA-MLM pretraining as a task (CLICKPROMPT_SRP4CTR.md A6).

Data: train + valid rows (the official 90 %; no labels), tokenised; the
IDs stay fully visible, the text is masked token-level (15 %, 80/10/10) on
the host by the input pipeline (``clickprompt.masking``). The loss is the
cross-entropy over the masked positions only, with the LM head run on at
most ``pretrain.max_masked`` masked positions per row (the fast form, as
FLIP's). Fresh runs take the PLM and its LM head from the checkpoint (the
head fresh, and reported, when the checkpoint has none) and the CTR model
and generator from ClickPrompt's Xavier-normal init. Micro-batches split
the loss exactly (the masked-token count of the global batch divides).
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from absl import logging

from flip_jax.data import pipeline
from flip_jax.methods.clickprompt import common
from flip_jax.methods.clickprompt import masking as masking_lib
from flip_jax.methods.clickprompt import model as model_lib
from flip_jax.train import inputs
from flip_jax.train import loss_task
from flip_jax.train import state as state_lib
from flip_jax.train import task as task_lib

# Batch keys the PA-MLM step reads (the unmasked text stays on the host).
PRETRAIN_KEYS = ("ids", "attention_mask", "mlm_input_ids", "mlm_labels")
_COLUMNS = ("ids", "input_ids", "attention_mask")


def max_masked(config) -> int:
  """``pretrain.max_masked``, or (-1) twice the expected count, capped."""
  m = config.pretrain.max_masked
  if m <= 0:
    m = math.ceil(2.0 * config.pretrain.masking.prob * config.data.max_length)
  return max(1, min(int(m), config.data.max_length))


class ClickPromptPretrainTask(loss_task.LossTask):
  """PA-MLM (no evaluation splits: trains, checkpoints, stops)."""
  name = "clickprompt_pretrain"

  @classmethod
  def reads_text(cls, config) -> bool:
    return True
  # Whether the LM head started fresh (set by load_data).
  head_fresh = False

  def __init__(self, config, model=None):
    super().__init__(config, model)
    common.resolve_optimizer(config, "pretrain")

  def config_errors(self):
    errors = common.config_errors(self.config, "pretrain")
    m = self.config.pretrain.masking
    for name in ("prob", "mask_frac", "random_frac"):
      v = m[name]
      if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
        errors.append(f"pretrain.masking.{name}={v!r}: expected [0, 1]")
    if not isinstance(self.config.pretrain.max_masked, int):
      errors.append("pretrain.max_masked: expected an int (-1 = automatic)")
    return errors

  # ------------------------------------------------------------------ data
  def load_data(self, workdir):
    config = self.config
    module, params, tokenizer, report = common.load_plm(config.model,
                                                        with_head=True)
    prepared, columns = inputs.pretraining_columns(
        config, workdir, tokenizer, _COLUMNS)
    self.head_fresh = bool(report.head_initialized)
    if self.head_fresh:
      logging.warning("PA-MLM: %s has no MLM head; the LM head starts fresh",
                      config.model.plm.name)
    return task_lib.TaskData(
        train=columns, eval_splits={}, feature_map=prepared.feature_map,
        extra={"plm_config": module.config, "plm_params": params,
               "tokenizer": tokenizer, "head_report": report},
        train_keys=PRETRAIN_KEYS,
        batch_transform=self._masking(tokenizer, module.config.vocab_size))

  def _masking(self, tokenizer, plm_vocab_size: int):
    """PA-MLM's token masks drawn per training batch (host side)."""
    m = self.config.pretrain.masking
    return masking_lib.masking_transform(
        masking_lib.TokenMasking(prob=m.prob, mask_frac=m.mask_frac,
                                 random_frac=m.random_frac),
        mask_token_id=tokenizer.mask_token_id,
        vocab_size=min(len(tokenizer), plm_vocab_size),
        special_ids=tokenizer.all_special_ids)

  # ----------------------------------------------------------------- model
  def build_model(self, data):
    cp = common.freeze("pretrain", self.config.model, self.config.clickprompt,
                       data.feature_map, data.extra["plm_config"],
                       max_masked(self.config))
    common.check_positions(cp, self.config.data.max_length)
    logging.info("PA-MLM: K=%d %s prompts, LM head on <= %d masked "
                 "positions per row", cp.num_prompt, cp.fusion,
                 cp.mlm_max_masked)
    self.model = model_lib.ClickPromptModel(cp)
    return self.model

  def example_batch(self, data, n):
    it = pipeline.train_iterator(
        data.train, global_batch_size=n, seed=0, process_index=0,
        process_count=1, prefetch_buffer_size=0,
        transform=data.batch_transform)
    return {k: v for k, v in next(it).items() if k in PRETRAIN_KEYS}

  def init_variables(self, rng, example, consts):
    return self.model.init({"params": rng, "dropout": rng}, example,
                           method="pa_mlm")

  def post_init(self, params, model_state, put, data):
    pre = data.extra["plm_params"]
    params = put(params, ("plm",), pre["encoder"])
    params = put(params, ("lm_head",), pre["mlm_head"])
    if "lm_decoder" in params:  # the untied decoder starts as a word-table copy
      params = put(params, ("lm_decoder",), np.asarray(
          pre["encoder"]["embeddings"]["word_embeddings"]["embedding"]))
    if "ctr" in params and self.config.clickprompt.ctr_init == "xavier":
      tree, kept = common.xavier_reinit(params["ctr"], self.config.seed)
      params = put(params, ("ctr",), tree)
      if kept:
        logging.info("xavier init: kept the zoo init of %s", kept)
    common.log_sizes(params, self.model.config)
    head = ("a FRESH LM head (none in the checkpoint)" if self.head_fresh
            else "its LM head")
    return params, model_state, (
        f"PLM {self.config.model.plm.name} with {head}; CTR model: "
        f"{self.config.clickprompt.ctr_init} init")

  # ------------------------------------------------------------------ loss
  def loss_norms(self, batch):
    per_row = jnp.sum(batch["mlm_labels"] != -100, axis=1, dtype=jnp.int32)
    per_row = jnp.minimum(per_row, self.model.config.mlm_max_masked)
    return jnp.maximum(jnp.sum(per_row), 1).astype(jnp.float32)

  def step_metrics(self, params, model_state, metrics):
    # Logged (and reported by the workflow): 1 when the LM head started fresh.
    metrics["lm_head_fresh"] = jnp.float32(self.head_fresh)
    return metrics

  def data_loss(self, params, model_state, batch, consts, rngs, norms=None):
    out, model_state = state_lib.apply_train(
        self.model, params, model_state, batch, deterministic=False,
        rngs=rngs, norms=norms, method="pa_mlm")
    return out.pop("loss"), (out, model_state)

