"""CTR-BERT (FLIP.md 7, the paper's PLM baseline) as a task on the shared loop.

Two PLM towers, one over the user text and one over the item text
(``towers``: the user's and the item's clauses of the row's prompt, each
tokenized on its own with [CLS] ... [SEP]); their [CLS] states,
concatenated, go through the official prediction layer: Linear(2H, 128) ->
tanh -> dropout -> Linear(128, 1). Both towers start from the PLM's public
weights. The official code (``ctr_bert.py``) builds two separate PLMs
(``ctr_bert.share_plm=False``); ``True`` runs both texts through one.

Param layout: ``user_plm/`` and ``item_plm/`` (separate towers) or ``plm/``
(shared), and ``head/{dense,out}``. Loss: the weighted mean BCE (the
official ``BCELoss``). Selected on valid AUC by the loop.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
from absl import logging
from flax import linen as nn

from flip_jax.data import pipeline
from flip_jax.methods.baselines import towers as towers_lib
from flip_jax.models import plm as plm_lib
from flip_jax.models.layers import TorchDense
from flip_jax.train import ctr_task
from flip_jax.train import inputs
from flip_jax.train import validate

# Batch keys of the model: each tower's tokens.
MODEL_KEYS = tuple(f"{side}_{k}" for side in towers_lib.SIDES
                   for k in towers_lib.TOKEN_KEYS)


@dataclasses.dataclass(frozen=True)
class CtrBertConfig:
  plm: Any                  # plm_lib.PLMConfig of both towers
  share_plm: bool = False   # one PLM for both texts (official: two)
  mlp_hidden: int = 128
  mlp_dropout: float = 0.2
  dtype: Any = jnp.float32
  plm_remat: bool = False


class PredictionLayer(nn.Module):
  """Linear(hidden) -> tanh -> dropout -> Linear(1) (official ctr_bert.py)."""
  hidden: int
  dropout: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, deterministic: bool):
    h = jnp.tanh(TorchDense(self.hidden, axes=("embed", "hidden"),
                            dtype=self.dtype, name="dense")(x))
    h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
    return TorchDense(1, axes=("hidden", None), dtype=jnp.float32,
                      name="out")(h.astype(jnp.float32))[..., 0]


class CtrBertModel(nn.Module):
  """Two text towers -> [CLS] states concatenated -> MLP -> logit."""
  config: CtrBertConfig

  def setup(self):
    cfg = self.config
    make = lambda name: plm_lib.PLMEncoder(cfg.plm, dtype=cfg.dtype,
                                           remat=cfg.plm_remat, name=name)
    if cfg.share_plm:
      self.plm = make("plm")
    else:
      self.user_plm = make("user_plm")
      self.item_plm = make("item_plm")
    self.head = PredictionLayer(cfg.mlp_hidden, cfg.mlp_dropout, cfg.dtype)

  def encoders(self):
    if self.config.share_plm:
      return self.plm, self.plm
    return self.user_plm, self.item_plm

  def __call__(self, batch, *, deterministic: bool = True):
    cls = []
    for side, enc in zip(towers_lib.SIDES, self.encoders()):
      cls.append(enc(batch[f"{side}_input_ids"],
                     batch[f"{side}_attention_mask"],
                     deterministic=deterministic)["cls"])
    x = jnp.concatenate(cls, axis=-1)
    return {"logit": self.head(x, deterministic=deterministic)}


def tower_max_length(config) -> int:
  """Tokens per tower text: ``ctr_bert.max_length`` (-1: the prompt's)."""
  length = config.ctr_bert.max_length
  return config.data.max_length if length == -1 else length


def plm_paths(share_plm: bool) -> tuple[str, ...]:
  """Top-level param names of the PLM tower(s)."""
  return ("plm",) if share_plm else ("user_plm", "item_plm")


class CtrBertTask(ctr_task.BaseCtrTask):
  """CTR-BERT from the public PLM weights, selected on valid AUC."""
  name = "ctr_bert"

  @classmethod
  def reads_text(cls, config) -> bool:
    return True

  def config_errors(self):
    cfg = self.config
    c = cfg.ctr_bert
    errors = super().config_errors() + inputs.model_errors(
        cfg.model) + inputs.data_errors(cfg.data)
    fields = list(c.user_fields)
    if not fields or not all(isinstance(f, str) for f in fields):
      errors.append(f"ctr_bert.user_fields={fields!r}: expected a non-empty "
                    "list of field names")
    elif len(set(fields)) != len(fields):
      errors.append(f"ctr_bert.user_fields={fields!r}: a field twice")
    else:
      known = towers_lib.known_fields(cfg.data)
      unknown = [f for f in fields if known is not None and f not in known]
      if unknown:
        errors.append(f"ctr_bert.user_fields: {unknown} are not fields of "
                      f"data.dataset={cfg.data.dataset!r} (its fields: "
                      f"{list(known)})")
      elif known is not None and set(fields) >= set(known):
        errors.append(f"ctr_bert.user_fields={fields!r}: every field; the "
                      "item tower needs at least one")
    validate.one_of(errors, "ctr_bert.share_plm", c.share_plm, (True, False))
    if not isinstance(c.mlp_hidden, int) or c.mlp_hidden < 1:
      errors.append(f"ctr_bert.mlp_hidden={c.mlp_hidden!r}: expected an "
                    "int >= 1")
    if not (isinstance(c.mlp_dropout, (int, float))
            and 0 <= c.mlp_dropout < 1):
      errors.append(f"ctr_bert.mlp_dropout={c.mlp_dropout!r}: expected a "
                    "number in [0, 1)")
    if not isinstance(c.max_length, int) or not (c.max_length == -1
                                                 or c.max_length >= 3):
      errors.append(f"ctr_bert.max_length={c.max_length!r}: expected -1 "
                    "(data.max_length) or an int >= 3")
    return errors

  # ------------------------------------------------------------------ data
  def load_data(self, workdir):
    config = self.config
    prepared = inputs.load_prepared(config, workdir)
    fm = prepared.feature_map
    by_side = towers_lib.side_fields(fm.field_names,
                                     list(config.ctr_bert.user_fields))
    plm_module, plm_params, tokenizer = inputs.load_plm(config.model)
    splits, stats = {}, {}
    for name, cols in prepared.splits.items():
      tok, stats[name] = towers_lib.tower_columns(
          tokenizer, cols["text"], cols["spans"], by_side,
          tower_max_length(config))
      splits[name] = {**cols, **tok}
    for side in towers_lib.SIDES:
      logging.info(
          "CTR-BERT %s tower: fields %s, %d rows truncated at %d tokens",
          side, [fm.field_names[f] for f in by_side[side]],
          sum(st[side]["truncated_rows"] for st in stats.values()),
          tower_max_length(config))
    if config.data.pad_to == "longest":
      splits = towers_lib.cut_to_longest(splits)
    return self.task_data(
        {k: pipeline.ctr_split_columns(v, fm.field_names, MODEL_KEYS)
         for k, v in splits.items()}, fm,
        {"plm_module": plm_module, "plm_params": plm_params,
               "tokenizer": tokenizer, "fields": by_side,
               "tower_stats": stats})

  def model_keys(self):
    return MODEL_KEYS

  # ----------------------------------------------------------------- model
  def build_model(self, data):
    c, m = self.config.ctr_bert, self.config.model
    self.model = CtrBertModel(CtrBertConfig(
        plm=data.extra["plm_module"].config, share_plm=c.share_plm,
        mlp_hidden=c.mlp_hidden, mlp_dropout=c.mlp_dropout,
        dtype=inputs.DTYPES[m.dtype], plm_remat=m.plm.remat))
    return self.model

  def post_init(self, params, model_state, put, data):
    for top in plm_paths(self.config.ctr_bert.share_plm):
      params = put(params, (top,), data.extra["plm_params"])
    towers = "one shared PLM" if self.config.ctr_bert.share_plm else (
        "two PLM towers")
    return params, model_state, (f"scratch; {towers} from public weights "
                                 f"{self.config.model.plm.name}")

  # ------------------------------------------------------------------ loss
  def reduction(self):
    """Mean BCE (the CTR-BERT recipe has no reduction to choose)."""
    return "mean"

  # ------------------------------------------------------------ evaluation
  def results(self, variables):
    del variables
    c = self.config.ctr_bert
    return {"share_plm": bool(c.share_plm),
            "user_fields": list(c.user_fields)}
