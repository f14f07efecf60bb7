"""P-Tab's stage 1 (FLIP.md 7): plain token-level MLM on the prompt text.

Classic BERT masking (``masking.mask_text_tokens``): each real, non-special
token is picked with probability ``data.token_mask_prob`` (0.15) and
becomes [MASK] (80 %), a random token (10 %) or stays (10 %); no IDs, no
field-level masking (the official ``mlm.py``). The PLM (``plm/``, the
public weights) and the checkpoint's own MLM head (``mlm_head/``: dense,
LayerNorm, bias; the decoder tied to the word embeddings; freshly
initialised where the checkpoint has none, e.g. MiniLM) predict the masked
tokens; loss: cross-entropy over the masked tokens. Rows: train + valid, as
FLIP's pretraining (no labels read).

Stage 2 is FLIP's finetuning in mode ``plm`` initialised from this run
(``ckpt.init_from``: ``plm/`` kept, ``mlm_head/`` dropped by the
finetuning config's regexes).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from flip_jax import losses
from flip_jax.data import masking as masking_lib
from flip_jax.models import plm as plm_lib
from flip_jax.train import inputs
from flip_jax.train import loss_task
from flip_jax.train import state as state_lib
from flip_jax.train import task as task_lib
from flip_jax.train import validate

# Batch keys the model reads.
MODEL_KEYS = ("attention_mask", "mlm_input_ids", "mlm_labels")
_COLUMNS = ("input_ids", "attention_mask")


@dataclasses.dataclass(frozen=True)
class PTabConfig:
  plm: Any                 # plm_lib.PLMConfig
  max_masked: int          # masked positions the head sees per row (K)
  dtype: Any = jnp.float32
  plm_remat: bool = False


class PTabPretrainModel(nn.Module):
  """PLM + tied MLM head on (at most K) masked positions per row."""
  config: PTabConfig

  def setup(self):
    cfg = self.config
    self.plm = plm_lib.PLMEncoder(cfg.plm, dtype=cfg.dtype,
                                  remat=cfg.plm_remat)
    self.mlm_head = plm_lib.MLMHead(cfg.plm, dtype=cfg.dtype)

  def __call__(self, batch, *, deterministic: bool = True, norms=None):
    """MLM loss and metrics; ``norms``: the global batch's token count
    (micro-batch mode: this micro-batch's share of the global means)."""
    hidden = self.plm(batch["mlm_input_ids"], batch["attention_mask"],
                      deterministic=deterministic)["last_hidden_state"]
    hidden, labels, valid, dropped = losses.gather_masked(
        hidden, batch["mlm_labels"], self.config.max_masked)
    logits = self.mlm_head(hidden, self.plm.word_embedding_matrix())
    loss, count = losses.mlm_loss(logits, labels, denominator=norms)
    denom = (jnp.maximum(count, 1) if norms is None else norms)
    hit = (jnp.argmax(logits, axis=-1) == labels) & valid
    return {"loss": loss, "mlm_loss": loss,
            "mlm_acc": jnp.sum(hit).astype(jnp.float32) / denom,
            "mlm_masked_tokens": count.astype(jnp.float32),
            "mlm_dropped": dropped.astype(jnp.float32)}


def auto_max_masked(length: int, prob: float) -> int:
  """K for rows of ``length`` tokens masked with probability ``prob``.

  The binomial mean over the non-special positions plus 4 standard
  deviations (a row drops a masked token with probability < 1e-4; the
  drops are counted in ``train/mlm_dropped``), at most ``length``.
  """
  n = max(length - 2, 1)
  mean = n * prob
  k = math.ceil(mean + 4 * math.sqrt(mean * (1 - prob))) + 1
  return int(min(max(k, 1), length))


def mask_batch(batch, *, seed: int, epoch: int, index, prob: float,
               mask_token_id: int, vocab_size: int, special_token_ids):
  """The pipeline's transform: adds ``mlm_input_ids`` / ``mlm_labels``."""
  out = dict(batch)
  out["mlm_input_ids"], out["mlm_labels"] = masking_lib.mask_text_tokens(
      batch["input_ids"], batch["attention_mask"], prob, mask_token_id,
      vocab_size, seed=seed, epoch=epoch, index=index,
      special_token_ids=special_token_ids)
  return out


def load_plm_with_head(model_cfg):
  """(PLMForMaskedLM, {'encoder', 'mlm_head'} params, tokenizer, report) of
  ``model.plm`` (the same reading as ``inputs.load_plm``, with the head)."""
  return inputs.load_plm(model_cfg, with_mlm_head=True, return_report=True)


class PTabPretrainTask(loss_task.LossTask):
  """P-Tab's token-level MLM (no evaluation splits: trains and stops)."""
  name = "p_tab_pretrain"

  @classmethod
  def reads_text(cls, config) -> bool:
    return True

  def config_errors(self):
    cfg = self.config
    errors = inputs.model_errors(cfg.model) + inputs.data_errors(cfg.data)
    validate.one_of(errors, "data.mlm_rule", cfg.data.mlm_rule, ("token",))
    p = cfg.data.token_mask_prob
    if not (isinstance(p, (int, float)) and 0 < p <= 1):
      errors.append(f"data.token_mask_prob={p!r}: expected a number in "
                    "(0, 1]")
    k = cfg.p_tab.max_masked
    if not isinstance(k, int) or not (k == -1 or k >= 1):
      errors.append(f"p_tab.max_masked={k!r}: expected -1 (auto) or an int "
                    ">= 1")
    return errors

  # ------------------------------------------------------------------ data
  def load_data(self, workdir):
    config = self.config
    module, params, tokenizer, report = load_plm_with_head(config.model)
    prepared, columns = inputs.pretraining_columns(config, workdir,
                                                   tokenizer, _COLUMNS)
    return task_lib.TaskData(
        train=columns, eval_splits={}, feature_map=prepared.feature_map,
        extra={"plm_module": module, "plm_params": params,
               "tokenizer": tokenizer,
               "head_initialized": bool(report.head_initialized)},
        train_keys=MODEL_KEYS,
        batch_transform=self._masking(tokenizer, module.config.vocab_size))

  def _masking(self, tokenizer, plm_vocab_size: int):
    """The token-level MLM masks drawn per training batch (host side)."""
    vocab = min(len(tokenizer), plm_vocab_size)
    return functools.partial(
        mask_batch, prob=float(self.config.data.token_mask_prob),
        mask_token_id=tokenizer.mask_token_id, vocab_size=vocab,
        special_token_ids=list(tokenizer.all_special_ids))

  # ----------------------------------------------------------------- model
  def max_masked(self, data) -> int:
    length = np.shape(data.train["input_ids"])[1]
    k = self.config.p_tab.max_masked
    return auto_max_masked(length, self.config.data.token_mask_prob) if (
        k == -1) else min(k, length)

  def build_model(self, data):
    m = self.config.model
    self.model = PTabPretrainModel(PTabConfig(
        plm=data.extra["plm_module"].config, max_masked=self.max_masked(data),
        dtype=inputs.DTYPES[m.dtype], plm_remat=m.plm.remat))
    return self.model

  def example_batch(self, data, n):
    batch = {k: np.asarray(data.train[k][:n], np.int32) for k in _COLUMNS}
    batch = data.batch_transform(batch, seed=0, epoch=0, index=np.arange(n))
    return {k: batch[k] for k in MODEL_KEYS}

  def init_variables(self, rng, example, consts):
    return self.model.init({"params": rng, "dropout": rng}, example)

  def post_init(self, params, model_state, put, data):
    loaded = data.extra["plm_params"]
    params = put(params, ("plm",), loaded["encoder"])
    params = put(params, ("mlm_head",), loaded["mlm_head"])
    head = ("a fresh MLM head (the checkpoint has none)"
            if data.extra["head_initialized"] else "its MLM head")
    return params, model_state, (
        f"PLM from {self.config.model.plm.name} with {head}")

  # ------------------------------------------------------------------ loss
  def loss_norms(self, batch):
    per_row = jnp.sum(batch["mlm_labels"] != masking_lib.IGNORE, axis=1,
                      dtype=jnp.int32)
    per_row = jnp.minimum(per_row, self.model.config.max_masked)
    return jnp.maximum(jnp.sum(per_row), 1).astype(jnp.float32)

  def data_loss(self, params, model_state, batch, consts, rngs, norms=None):
    out, model_state = state_lib.apply_train(
        self.model, params, model_state, batch, deterministic=False,
        rngs=rngs, norms=norms)
    loss = out.pop("loss")
    return loss, (out, model_state)
