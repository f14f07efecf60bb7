"""Finetuning from a pretraining run takes its architecture, but the PLM's
dropout rates from the finetuning config (they are not architecture)."""
import json

from experiments.configs import flip_finetune
from experiments.configs import flip_pretrain
from flip_jax.methods.flip import finetune


def _pretraining_run(folder, **plm):
  pre = flip_pretrain.get_config("dataset=synthetic,preset=tiny")
  for k, v in plm.items():
    pre.model.plm[k] = v
  pre.model.ctr.embed_dim = 12
  (folder / "config.json").write_text(json.dumps(pre.to_dict()))
  return str(folder)


def test_architecture_from_the_run_dropout_from_the_finetuning_config(
    tmp_path):
  cfg = flip_finetune.get_config("dataset=synthetic,preset=tiny,mode=joint")
  cfg.ckpt.init_from = _pretraining_run(tmp_path, dropout=0.0,
                                        attention_dropout=0.0, num_layers=1)
  model = finetune.resolve_model_config(cfg)
  assert model.plm.num_layers == 1 and model.ctr.embed_dim == 12
  # None = the checkpoint's own HF dropout, as the baselines train.
  assert model.plm.dropout is None and model.plm.attention_dropout is None
  cfg.model.plm.dropout = 0.05
  assert finetune.resolve_model_config(cfg).plm.dropout == 0.05


def test_without_init_from_the_config_is_kept():
  cfg = flip_finetune.get_config("dataset=synthetic,preset=tiny,mode=plm")
  model = finetune.resolve_model_config(cfg)
  assert model.to_dict() == cfg.model.to_dict()
