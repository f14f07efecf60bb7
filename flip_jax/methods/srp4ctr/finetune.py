"""The SRP4CTR CTR task: SRP4CTR, its ablations, DIN and the backbone alone.

``srp4ctr.sequence`` (fgbert / din / none), ``srp4ctr.cross_attention`` and
``srp4ctr.num_queries`` pick the model (`model.Srp4ctrModel`). With
``srp4ctr.pretrained`` (an FG-BERT pretraining workdir) a fresh run takes
the encoder ``seq/`` from it and, with ``srp4ctr.cross_from_pretrained``,
initialises each cross-attention layer from the pretrained layer (its
query, output, FFN and LayerNorms; K/V are the encoder's own); the encoder
architecture and the ``sequence`` section are then the pretraining run's.
Frozen vs finetuned pretrained parameters is ``optim.freeze`` (e.g.
``^seq/``). Everything else (selection on valid AUC, the single test
evaluation, checkpoints, resume) is the shared loop's.
"""
from __future__ import annotations

import os

import jax
import ml_collections as mlc
import numpy as np
from absl import logging

from flip_jax import checkpoint
from flip_jax import jsonio
from flip_jax.data import features
from flip_jax.data import sequences
from flip_jax.methods.srp4ctr import data as data_lib
from flip_jax.methods.srp4ctr import model as model_lib
from flip_jax.methods.srp4ctr import pretrain as pretrain_lib
from flip_jax.models import ctr as ctr_lib
from flip_jax.train import ctr_task
from flip_jax.train import validate


def resolve_config(config) -> mlc.ConfigDict:
  """The config with the pretraining run's ``model.seq`` and ``sequence``."""
  config = mlc.ConfigDict(config.to_dict())
  pre = config.srp4ctr.pretrained
  if not pre:
    return config
  path = os.path.join(pre, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"srp4ctr.pretrained={pre!r}: no config.json "
                            "there; is it an FG-BERT pretraining workdir?")
  saved = jsonio.read_json(path)
  if saved.get("task") != pretrain_lib.Srp4ctrPretrainTask.name:
    raise ValueError(f"srp4ctr.pretrained={pre!r} is a {saved.get('task')!r} "
                     "run, not an FG-BERT pretraining run")
  for part, node in (("model.seq", config.model), ("sequence", config)):
    key = part.rsplit(".", 1)[-1]
    want = saved["model"]["seq"] if key == "seq" else saved["sequence"]
    if node[key].to_dict() != want:
      logging.info("srp4ctr.pretrained: using the pretraining run's %s %s",
                   part, want)
    node[key] = mlc.ConfigDict(want)
  config.model.dtype = saved["model"]["dtype"]
  return config


def model_keys(cfg) -> tuple[str, ...]:
  keys = ("ids", "target")
  return keys if cfg.srp4ctr.sequence == "none" else keys + ("hist",
                                                             "hist_mask")


def build_model(cfg, store, feature_map) -> model_lib.Srp4ctrModel:
  """The CTR model of a (resolved) config on this data."""
  s = cfg.srp4ctr
  seq = data_lib.seq_config(cfg, store)
  fx = model_lib.extra_fields(s)
  return model_lib.Srp4ctrModel(model_lib.ModelConfig(
      ctr=ctr_lib.CTRConfig.from_config(
          cfg.model.ctr, feature_map.num_features, feature_map.num_fields,
          num_extra_fields=fx),
      seq=seq, sequence=s.sequence, cross_attention=s.cross_attention,
      num_queries=s.num_queries, query_layers=s.query_layers,
      din_hidden=tuple(s.din.hidden), din_act=s.din.act))


class Srp4ctrTask(ctr_task.BaseCtrTask):
  """CTR with behaviour sequences, selected on valid AUC."""
  name = "srp4ctr"
  source_fields = ("ckpt.init_from", "srp4ctr.pretrained")

  def __init__(self, config, model=None):
    super().__init__(config, model)
    self.cfg = resolve_config(config)

  def config_errors(self):
    c = self.cfg
    errors = super().config_errors() + pretrain_lib.config_errors(c)
    validate.one_of(errors, "srp4ctr.sequence", c.srp4ctr.sequence,
                    model_lib.SEQUENCE_MODELS)
    validate.positive(errors, "srp4ctr.num_queries", c.srp4ctr.num_queries,
                      zero_ok=True)
    validate.positive(errors, "srp4ctr.query_layers", c.srp4ctr.query_layers)
    validate.one_of(errors, "model.ctr.name", c.model.ctr.name,
                    tuple(ctr_lib.CTR_MODELS))
    if c.srp4ctr.pretrained and c.srp4ctr.sequence != "fgbert":
      errors.append(f"srp4ctr.pretrained is set but srp4ctr.sequence="
                    f"{c.srp4ctr.sequence!r} has no FG-BERT to take")
    return errors

  # ------------------------------------------------------------------ data
  def recorded_sections(self):
    return ({"model": self.cfg.model, "sequence": self.cfg.sequence},
            self.cfg.srp4ctr.pretrained)

  def load_data(self, workdir):
    cfg = self.cfg
    prepared, store = data_lib.load_store(cfg, workdir)
    fm = prepared.feature_map
    if cfg.srp4ctr.pretrained:
      path = os.path.join(cfg.srp4ctr.pretrained, "feature_map.json")
      diff = features.first_difference(features.FeatureMap.load(path), fm)
      if diff:
        raise ValueError(f"srp4ctr.pretrained: {path} differs from this "
                         f"run's data ({diff})")
    for split in ("train", "test"):
      if split not in prepared.splits:
        raise ValueError(f"data: split {split!r} missing (protocol "
                         f"{cfg.data.protocol!r}); srp4ctr needs it")
    splits = {s: data_lib.ctr_columns(prepared, store, s)
              for s in prepared.splits}
    logging.info("srp4ctr: %s, %d users, %d events, windows of %d",
                 sequences.TIE_RULE, store.num_users, len(store.tokens),
                 cfg.sequence.max_length)
    # Deterministic (it gathers the windows): training and evaluation alike.
    transform = (None if cfg.srp4ctr.sequence == "none" else
                 sequences.WindowTransform(store.tokens,
                                           cfg.sequence.max_length))
    return self.task_data(splits, fm, {"store": store}, transform=transform)

  def model_keys(self):
    return model_keys(self.cfg)

  # ----------------------------------------------------------------- model
  def build_model(self, data):
    self.model = build_model(self.cfg, data.extra["store"], data.feature_map)
    return self.model

  def example_batch(self, data, n):
    idx = np.arange(n) % len(data.train["label"])
    batch = {k: np.asarray(v)[idx] for k, v in data.train.items()}
    batch = sequences.WindowTransform(data.extra["store"].tokens,
                                      self.cfg.sequence.max_length)(batch)
    return {k: batch[k] for k in model_keys(self.cfg)}

  def post_init(self, params, model_state, put, data):
    s = self.cfg.srp4ctr
    if not s.pretrained:
      return params, model_state, "scratch"
    step = None if s.pretrained_step < 0 else s.pretrained_step
    loaded = checkpoint.restore_params(s.pretrained, step=step)
    params = _put_checked(params, put, ("seq",), loaded["seq"])
    if s.cross_attention and s.cross_from_pretrained:
      for l in range(self.cfg.model.seq.layers):
        layer = {k: v for k, v in loaded["seq"][f"layers_{l}"].items()
                 if k not in ("key", "value")}
        params = _put_checked(params, put, (f"cross_{l}",), layer)
    cross = (", cross-attention layers from its layers"
             if s.cross_attention and s.cross_from_pretrained else "")
    return params, model_state, (
        f"FG-BERT from {s.pretrained}{cross}, the rest from scratch")

  # ------------------------------------------------------------------ loss
  def reduction(self):
    return self.cfg.loss.reduction

  def l2_coefficients(self):
    loss = self.cfg.loss
    if not loss.l2_regex or loss.l2 <= 0:
      return None
    return {r: loss.l2 for r in loss.l2_regex}

  # ------------------------------------------------------------ evaluation
  def results(self, variables):
    s = self.cfg.srp4ctr
    return {"sequence": s.sequence, "cross_attention": s.cross_attention,
            "num_queries": s.num_queries, "pretrained": s.pretrained,
            "attributes": list(self.cfg.sequence.attributes),
            "freeze": list(self.cfg.optim.freeze),
            "model": self.cfg.model.ctr.name}


def _put_checked(params, put, path, value):
  """``put`` after checking every leaf's shape against the model's."""
  node = params
  for p in path:
    node = node[p]
  want = jax.tree_util.tree_flatten_with_path(node)[0]
  got = jax.tree_util.tree_flatten_with_path(value)[0]
  if [k for k, _ in want] != [k for k, _ in got]:
    raise ValueError(f"srp4ctr.pretrained: {'/'.join(path)} has other params "
                     "in the pretraining run")
  for (k, a), (_, b) in zip(want, got):
    if tuple(np.shape(a)) != tuple(np.shape(b)):
      raise ValueError(f"srp4ctr.pretrained: {'/'.join(path)}{k} has shape "
                       f"{np.shape(b)} there, {np.shape(a)} here")
  return put(params, path, value)
