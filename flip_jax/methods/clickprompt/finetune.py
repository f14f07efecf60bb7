"""ClickPrompt finetuning for CTR as a task (CLICKPROMPT_SRP4CTR.md A7).

``finetune.mode`` (``model.FINETUNE_MODES``): ``prefix_add`` (with the PLM:
layer-wise prompts, α-mixed logits), ``ctr_only`` (without the PLM: the
PA-MLM backbone plus a fresh head, the plain model's inference cost), and
the baselines / ablations ``add`` (no prompts), ``nlp_only`` (the PLM
alone), ``prompt_add`` (input-layer prompts), ``prefix`` / ``prompt`` (no
CTR logit). From a PA-MLM run (``ckpt.init_from``: the backbone, PLM, K and
position rule are then that run's) or from scratch with the PLM's public
weights. Loss: mean BCE of the fused logit. Selected on valid AUC by the
loop, the test split evaluated once; a finished run is reloaded by
``flip_jax.train.reload`` (predict, export).
"""
from __future__ import annotations

import jax
from absl import logging

from flip_jax.data import pipeline
from flip_jax.methods.clickprompt import common
from flip_jax.methods.clickprompt import model as model_lib
from flip_jax.train import ctr_task
from flip_jax.train import inputs


def model_keys(mode: str) -> tuple[str, ...]:
  """Batch keys the model of ``mode`` reads."""
  uses_q, uses_plm = model_lib.MODES[mode][:2]
  return (("ids",) if uses_q else ()) + (
      ("input_ids", "attention_mask") if uses_plm else ())


def build_model(mode: str, model_cfg, cp_cfg, feature_map, plm_config,
                max_length: int) -> model_lib.ClickPromptModel:
  cp = common.freeze(mode, model_cfg, cp_cfg, feature_map, plm_config)
  common.check_positions(cp, max_length)
  return model_lib.ClickPromptModel(cp)


class ClickPromptFinetuneTask(ctr_task.BaseCtrTask):
  """Finetuning in one of the modes, selected on valid AUC."""
  name = "clickprompt_finetune"

  @classmethod
  def reads_text(cls, config) -> bool:
    return model_lib.MODES[config.finetune.mode][1]

  def __init__(self, config, model=None):
    super().__init__(config, model)
    self.mode = config.finetune.mode
    self.model_cfg, self.cp_cfg = common.resolve_sections(config)
    if self.mode in model_lib.FINETUNE_MODES:
      common.resolve_optimizer(config, self.mode)

  def config_errors(self):
    return super().config_errors() + common.config_errors(self.config,
                                                           self.mode)

  @property
  def uses_plm(self) -> bool:
    return model_lib.MODES[self.mode][1]

  # ------------------------------------------------------------------ data
  def recorded_sections(self):
    return ({"model": self.model_cfg, "clickprompt": self.cp_cfg},
            self.config.ckpt.init_from)

  def load_data(self, workdir):
    config = self.config
    prepared = inputs.load_prepared(config, workdir)
    fm = prepared.feature_map
    if config.ckpt.init_from:
      inputs.check_init_from_feature_map(config.ckpt.init_from, fm)
    extra = {"prepared": prepared}
    splits = prepared.splits
    if self.uses_plm:
      module, params, tokenizer, _ = common.load_plm(self.model_cfg)
      extra.update(plm_config=module.config, plm_params=params,
                   tokenizer=tokenizer)
      splits = inputs.tokenized(config, prepared, tokenizer)
    keys = model_keys(self.mode)
    return self.task_data(
        {k: pipeline.ctr_split_columns(v, fm.field_names, keys)
         for k, v in splits.items()}, fm, extra)

  def model_keys(self):
    return model_keys(self.mode)

  # ----------------------------------------------------------------- model
  def build_model(self, data):
    self.model = build_model(self.mode, self.model_cfg, self.cp_cfg,
                             data.feature_map, data.extra.get("plm_config"),
                             self.config.data.max_length)
    return self.model

  def post_init(self, params, model_state, put, data):
    if self.uses_plm:
      params = put(params, ("plm",), data.extra["plm_params"])
    if "ctr" in params and self.cp_cfg.ctr_init == "xavier":
      tree, kept = common.xavier_reinit(params["ctr"], self.config.seed)
      params = put(params, ("ctr",), tree)
      if kept:
        logging.info("xavier init: kept the zoo init of %s", kept)
    common.log_sizes(params, self.model.config)
    return params, model_state, self._describe_init()

  def _describe_init(self):
    """What ``post_init`` did, for the log and results."""
    parts = []
    if model_lib.MODES[self.mode][0]:
      parts.append(f"CTR model from scratch ({self.cp_cfg.ctr_init} init)")
    if self.uses_plm:
      parts.append(f"PLM from public weights {self.model_cfg.plm.name}")
    return "; ".join(parts)

  # ------------------------------------------------------------------ loss
  # BCE of the fused logit (the official loss; no auxiliary terms).
  def step_metrics(self, params, model_state, metrics):
    if "alpha" in params:
      metrics["alpha"] = params["alpha"]
    return metrics

  # ------------------------------------------------------------ evaluation
  def results(self, variables):
    cp = self.model.config
    out = {"mode": self.mode, "num_prompt": cp.num_prompt,
           "prompt_usage": cp.prompt_usage, "pooler": cp.pooler}
    if "alpha" in variables["params"]:
      out["alpha"] = float(jax.device_get(variables["params"]["alpha"]))
    return out
