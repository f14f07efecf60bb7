"""Dropout rates outside [0, 1) are refused by validation, naming the field.

Defect class: model.plm.dropout, pretrain.proj_dropout,
pretrain.mlm.head_dropout (and the other rates) accepted 1.5 and -0.1; the
check is by name (every field called ``*dropout`` of any task's config), so
a rate added later is covered too.
"""
import pytest

from experiments.configs import ctr as ctr_config
from experiments.configs import flip_pretrain
from experiments.configs import srp4ctr_pretrain
from flip_jax.train import validate


@pytest.mark.parametrize("config,field", [
    (lambda: flip_pretrain.get_config("dataset=synthetic"),
     "model.plm.dropout"),
    (lambda: flip_pretrain.get_config("dataset=synthetic"),
     "model.plm.attention_dropout"),
    (lambda: flip_pretrain.get_config("dataset=synthetic"),
     "pretrain.proj_dropout"),
    (lambda: flip_pretrain.get_config("dataset=synthetic"),
     "pretrain.mlm.head_dropout"),
    (lambda: srp4ctr_pretrain.get_config("dataset=synthetic"),
     "model.seq.dropout"),
    (lambda: ctr_config.get_config("dataset=synthetic,model=dcnv2"),
     "model.ctr.dropout"),
])
def test_dropout_rates_outside_0_1_are_refused(config, field):
  cfg = config()
  assert not validate.rate_errors(cfg)
  *parents, leaf = field.split(".")
  section = cfg
  for p in parents:
    section = section[p]
  for bad in (1.5, -0.1, 1.0):
    section[leaf] = bad
    assert validate.rate_errors(cfg) == [
        f"{field}={bad!r}: expected a number in [0, 1)"]
    assert any(e.startswith(f"{field}={bad!r}")
               for e in validate.shared_errors(cfg))
  section[leaf] = 0.0
  assert not validate.rate_errors(cfg)


def test_validate_reports_a_field_once():
  cfg = flip_pretrain.get_config("dataset=synthetic")
  cfg.pretrain.proj_dropout = 2.0

  class Task:

    def config_errors(self):
      return ["pretrain.proj_dropout=2.0: expected a number in [0, 1)"]

  with pytest.raises(validate.ConfigError) as info:
    validate.validate(cfg, Task())
  assert str(info.value).count("pretrain.proj_dropout") == 1
