"""FLIP finetuning for CTR as a task: FLIP_ID / FLIP_PLM / FLIP (joint).

``finetune.mode``: ``id`` (the ID model), ``plm`` (the PLM, [CLS] -> linear)
or ``joint`` (both, mixed by a learned alpha, with both branches' BCE as
auxiliary terms). From a pretraining run (``ckpt.init_from``: the backbone
and PLM architecture are then the pretraining run's) or, as baselines, from
scratch with the PLM's public weights. Selected on valid AUC by the loop;
a finished run is reloaded by ``flip_jax.train.reload`` (predict, export).
"""
from __future__ import annotations

import os

import jax
import ml_collections as mlc
from absl import logging

from flip_jax import jsonio
from flip_jax.data import pipeline
from flip_jax.methods.flip import finetune_model as ft_lib
from flip_jax.train import config_compat
from flip_jax.train import ctr_task
from flip_jax.train import inputs
from flip_jax.train import validate


def model_keys(mode: str) -> tuple[str, ...]:
  """Batch keys the model of ``mode`` reads."""
  return {"id": inputs.CTR_KEYS, "plm": inputs.TEXT_KEYS,
          "joint": inputs.CTR_KEYS + inputs.TEXT_KEYS}[mode]


# Training-time PLM fields a finetuning config keeps from its own model
# section (None = the checkpoint's HF config), not from the pretraining run:
# dropout rates are not architecture.
OWN_PLM_FIELDS = ("dropout", "attention_dropout")


def resolve_model_config(config) -> mlc.ConfigDict:
  """The model section; with init_from, the pretraining run's architecture
  (its ``model`` section), the PLM's ``OWN_PLM_FIELDS`` excepted."""
  model = mlc.ConfigDict(config.model.to_dict())
  if not config.ckpt.init_from:
    return model
  path = os.path.join(config.ckpt.init_from, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"ckpt.init_from={config.ckpt.init_from!r}: no config.json there; "
        "is it a pretraining workdir?")
  pre = config_compat.upgrade(jsonio.read_json(path))["model"]
  for key in OWN_PLM_FIELDS:
    pre["plm"][key] = model.plm[key]
  for part in ("ctr", "plm"):
    if pre[part] != model[part].to_dict():
      logging.info("init_from: using the pretraining run's model.%s %s",
                   part, pre[part])
  return mlc.ConfigDict(pre)


def build_model(mode_cfg, model_cfg, feature_map,
                plm_config) -> ft_lib.FlipCtrModel:
  """The finetuning model of ``finetune`` config ``mode_cfg``."""
  return ft_lib.FlipCtrModel(ft_lib.FinetuneConfig(
      mode=mode_cfg.mode,
      ctr=(inputs.ctr_config(model_cfg, feature_map)
           if mode_cfg.mode != "plm" else None),
      plm=plm_config, alpha_init=mode_cfg.alpha_init,
      alpha_param=mode_cfg.alpha_param,
      dtype=inputs.DTYPES[model_cfg.dtype], plm_remat=model_cfg.plm.remat))


class FlipFinetuneTask(ctr_task.BaseCtrTask):
  """Finetuning in one of the three modes, selected on valid AUC."""
  name = "flip_finetune"

  @classmethod
  def reads_text(cls, config) -> bool:
    return config.finetune.mode in ("plm", "joint")

  def __init__(self, config, model=None):
    super().__init__(config, model)
    self.mode = config.finetune.mode
    self.model_cfg = resolve_model_config(config)

  def config_errors(self):
    errors = super().config_errors() + inputs.model_errors(
        self.model_cfg) + inputs.data_errors(self.config.data)
    validate.one_of(errors, "finetune.mode", self.mode, ft_lib.MODES)
    validate.one_of(errors, "finetune.alpha_param",
                    self.config.finetune.alpha_param, ("raw", "sigmoid"))
    validate.positive(errors, "loss.l2", self.config.loss.l2, zero_ok=True)
    return errors

  def recorded_sections(self):
    return {"model": self.model_cfg}, self.config.ckpt.init_from

  # ------------------------------------------------------------------ data
  def load_data(self, workdir):
    config = self.config
    prepared = inputs.load_prepared(config, workdir)
    fm = prepared.feature_map
    if config.ckpt.init_from:
      inputs.check_init_from_feature_map(config.ckpt.init_from, fm)
    extra = {"prepared": prepared}
    if self.mode in ("plm", "joint"):
      plm_module, plm_params, tokenizer = inputs.load_plm(self.model_cfg)
      extra.update(plm_module=plm_module, plm_params=plm_params,
                   tokenizer=tokenizer)
      splits = inputs.tokenized(config, prepared, tokenizer)
    else:
      splits = prepared.splits
    keys = model_keys(self.mode)
    return self.task_data(
        {k: pipeline.ctr_split_columns(v, fm.field_names, keys)
         for k, v in splits.items()}, fm, extra)

  def model_keys(self):
    return model_keys(self.mode)

  # ----------------------------------------------------------------- model
  def build_model(self, data):
    plm_module = data.extra.get("plm_module")
    self.model = build_model(self.config.finetune, self.model_cfg,
                             data.feature_map,
                             plm_module.config if plm_module else None)
    return self.model

  def post_init(self, params, model_state, put, data):
    if self.mode in ("plm", "joint"):
      params = put(params, ("plm",), data.extra["plm_params"])
      return params, model_state, (
          f"scratch; PLM from public weights {self.model_cfg.plm.name}")
    return params, model_state, "scratch"

  # ------------------------------------------------------------------ loss
  def aux_logits(self):
    """Joint: both branches' BCE, weighted by ``loss.aux_weight``."""
    if self.mode == "joint":
      return ("ctr/logit", "txt/logit"), self.config.loss.aux_weight
    return (), 0.0

  def l2_coefficients(self):
    cfg = self.config.loss
    if cfg.l2 <= 0:
      return None
    return {r: cfg.l2 for r in cfg.l2_regex}

  def step_metrics(self, params, model_state, metrics):
    if self.mode == "joint":
      metrics["alpha"] = self.model.apply({"params": params, **model_state},
                                          method="alpha")
    return metrics

  # ------------------------------------------------------------ evaluation
  def results(self, variables):
    out = {"mode": self.mode}
    if self.mode == "joint":
      out["alpha"] = float(jax.device_get(variables["params"]["alpha"]))
    return out
