"""The backbone registry: name -> module class, `build`, `rep_dim`."""
from __future__ import annotations

from flip_jax.models.ctr import autoint, baselines, dcnv2, fm
from flip_jax.models.ctr.base import CTRModel
from flip_jax.models.ctr.config import CTRConfig

CTR_MODELS: dict[str, type[CTRModel]] = {
    "dcnv2": dcnv2.DCNv2,
    "dcnv2_full": dcnv2.DCNv2Full,
    "dcn": dcnv2.DCN,
    "deepfm": fm.DeepFM,
    "fm": fm.FM,
    "afm": fm.AFM,
    "autoint": autoint.AutoInt,
    "dnn": baselines.DNN,
    "widedeep": baselines.WideDeep,
    "pnn": baselines.PNN,
    "xdeepfm": baselines.XDeepFM,
    "afn": baselines.AFN,
}


def model_class(name: str) -> type[CTRModel]:
  if name not in CTR_MODELS:
    raise ValueError(f"unknown CTR model {name!r}; known: {sorted(CTR_MODELS)}")
  return CTR_MODELS[name]


def build(cfg: CTRConfig) -> CTRModel:
  """Instantiates the backbone named by `cfg.name`."""
  return model_class(cfg.name)(cfg)


def rep_dim(cfg: CTRConfig) -> int:
  """D_r of the backbone `cfg` describes, without building it."""
  return model_class(cfg.name).rep_dim_of(cfg)
