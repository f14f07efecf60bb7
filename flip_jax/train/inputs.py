"""What the tasks that read text or the ID fields share (FLIP, ClickPrompt,
CTR-BERT, P-Tab): the PLM, the ID backbone's config, the prepared and
tokenized data, and the checks of their config fields."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from absl import logging

from flip_jax.data import pipeline
from flip_jax.data import prepare
from flip_jax.models import ctr as ctr_lib
from flip_jax.models import plm as plm_lib
from flip_jax.train import finished
from flip_jax.train import runtime
from flip_jax.train import validate

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16,
          "float16": jnp.float16}
CTR_KEYS = ("ids",)
TEXT_KEYS = ("input_ids", "attention_mask")


def ctr_config(model_cfg, feature_map) -> ctr_lib.CTRConfig:
  """The frozen ID-backbone config of ``model.ctr`` for this data."""
  return ctr_lib.CTRConfig.from_config(
      model_cfg.ctr, num_features=feature_map.num_features,
      num_fields=feature_map.num_fields)


def load_plm(model_cfg, **extra):
  """(module, params, tokenizer) of the PLM the ``model.plm`` config names.

  The one reading of ``model.plm`` (FLIP's pretraining and finetuning,
  reloading a finetuned run, P-Tab, ClickPrompt); ``extra`` goes to
  ``plm_lib.load_pretrained`` (``with_mlm_head``, ``return_report``).
  """
  plm = model_cfg.plm
  return plm_lib.load_pretrained(
      plm.name, num_layers=plm.num_layers, dtype=DTYPES[model_cfg.dtype],
      dropout=plm.dropout, remat=plm.remat, attention=plm.attention,
      attention_dropout=plm.attention_dropout,
      dropout_bits=plm.dropout_bits, fused_qkv=plm.fused_qkv, **extra)


def load_prepared(config, workdir: str):
  """The processed data of ``config.data`` (built once per cache)."""
  return runtime.main_process_first(
      lambda: prepare.load_dataset(
          config.data, prepare.default_cache_root(config.data, workdir)),
      "data")


def tokenized(config, prepared, tokenizer):
  """Every split with its token columns (cached once per tokenizer).

  With ``data.pad_to='longest'`` the token columns are cut to the longest
  prompt of all splits (never below it, so nothing is truncated that
  ``max_length`` kept): the same length in every split and step, so one
  compiled shape.
  """
  splits = runtime.main_process_first(
      lambda: prepare.tokenize_dataset(prepared, tokenizer,
                                       config.data.max_length), "tokens")
  if config.data.pad_to == "max_length":
    return splits
  longest = max(int(np.asarray(cols["attention_mask"]).sum(axis=1).max())
                for cols in splits.values() if len(cols["attention_mask"]))
  if longest >= config.data.max_length:
    return splits
  logging.info("token columns cut from %d to the longest prompt, %d",
               config.data.max_length, longest)
  return {name: {k: (v[:, :longest] if k in prepare.TOKEN_COLUMNS else v)
                 for k, v in cols.items()}
          for name, cols in splits.items()}


def model_errors(model_cfg) -> list[str]:
  """Problems with ``model.*`` (dtype, PLM attention, the backbone)."""
  errors: list[str] = []
  validate.one_of(errors, "model.dtype", model_cfg.dtype, tuple(DTYPES))
  validate.one_of(errors, "model.plm.attention", model_cfg.plm.attention,
                  plm_lib.ATTENTION_IMPLS)
  validate.one_of(errors, "model.plm.dropout_bits", model_cfg.plm.dropout_bits,
                  plm_lib.DROPOUT_BITS)
  validate.one_of(errors, "model.ctr.name", model_cfg.ctr.name,
                  tuple(ctr_lib.CTR_MODELS))
  return errors


def data_errors(data_cfg) -> list[str]:
  """Problems with the ``data.*`` fields the text tasks read."""
  errors: list[str] = []
  validate.one_of(errors, "data.pad_to", data_cfg.pad_to,
                  ("longest", "max_length"))
  validate.positive(errors, "data.max_length", data_cfg.max_length)
  return errors


def pretraining_columns(config, workdir: str, tokenizer, keys):
  """(prepared, columns): train + valid rows (no labels used), tokenized,
  the ``keys`` columns only: what FLIP-style pretraining reads."""
  prepared = load_prepared(config, workdir)
  tok = tokenized(config, prepared, tokenizer)
  parts = [tok["train"]] + ([tok["valid"]] if "valid" in tok else [])
  return prepared, pipeline.array_columns(pipeline.concat_columns(*parts),
                                          keys)


def check_init_from_feature_map(init_from: str, feature_map) -> None:
  """A pretraining run (``ckpt.init_from``) a finetuning run starts from must
  have this data's feature map, id for id.

  Equal sizes are not enough (another subsample or split can give the same
  number of features with other ids): the field names, each field's
  vocabulary and its feature counts must all agree
  (``features.first_difference``), so that no id silently maps to another
  embedding row.
  """
  finished.check_feature_map(
      init_from, feature_map, advice="init_from: finetune on the dataset and "
      "data config the run was pretrained on")
