"""The presets of the FLIP configs: the cpu-full preset trains on every
row within its stated budgets, every FLIP stage knows every preset, and an
unknown preset is refused by name."""
import pytest

from experiments.configs import ctr_bert
from experiments.configs import flip_finetune
from experiments.configs import flip_pretrain
from experiments.configs import p_tab_pretrain
from experiments.configs import presets
from flip_jax.train import validate

CONFIGS = [flip_pretrain.get_config, p_tab_pretrain.get_config,
           ctr_bert.get_config] + [
               lambda a, m=m: flip_finetune.get_config(f"{a},mode={m}")
               for m in ("id", "plm", "joint")]


@pytest.mark.parametrize("preset", flip_pretrain.PRESETS)
@pytest.mark.parametrize("make", CONFIGS)
def test_every_flip_config_builds_every_preset(make, preset):
  cfg = make(f"dataset=ml-100k,preset={preset}")
  assert not validate.shared_errors(cfg)


def test_cpu_full_trains_on_all_rows_within_its_stated_budgets():
  for make in CONFIGS:
    cfg = make("dataset=ml-100k,preset=cpu-full")
    assert cfg.data.subsample == 1.0
  ids = flip_finetune.get_config("dataset=ml-100k,preset=cpu-full,mode=id")
  assert ids.train.max_steps == -1  # ID models: epochs and early stopping
  pre = flip_pretrain.get_config("dataset=ml-100k,preset=cpu-full")
  assert pre.train.max_steps == flip_pretrain.CPU_FULL_PRETRAIN_STEPS
  ml1m = flip_pretrain.get_config("dataset=ml-1m,preset=cpu-full")
  assert ml1m.data.subsample == presets.CPU_FULL_SUBSAMPLE["ml-1m"]
  plm = flip_finetune.get_config("dataset=ml-100k,preset=cpu-full,mode=plm")
  assert plm.train.batch_size == flip_finetune.CPU_FULL_PLM_BATCH
  assert plm.train.max_steps == flip_finetune.CPU_FULL_PLM_STEPS
  assert plm.train.eval_every_steps < 0  # evaluations per epoch
  assert plm.train.patience >= 1
  assert plm.optim.lr == flip_finetune.CPU_FULL_PLM_LR


@pytest.mark.parametrize("make", CONFIGS)
def test_unknown_preset_is_refused_by_name(make):
  with pytest.raises(ValueError, match="cpu-large"):
    make("dataset=ml-100k,preset=cpu-large")


def test_eval_every_zero_is_a_config_error():
  cfg = flip_finetune.get_config("dataset=ml-100k,preset=cpu-full,mode=plm")
  cfg.train.eval_every_steps = 0
  assert any("eval_every_steps" in e for e in validate.shared_errors(cfg))
