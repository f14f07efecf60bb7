"""Config mistakes on every launcher: one `error:` line naming the key.

Defect classes: an unknown or misspelt --config.<key> (and keys renamed by
the one-loop redesign) ended in ml_collections' AttributeError chain during
flag parsing, the suggestion it makes buried in it; a default config file
(`experiments.pretrain` / `finetune` / `train_ctr`) failed the same way while
its flag was being defined; a wrong type ended in absl's two-line FATAL
message; run_all's --set named no new key, and a wrong type there was a
traceback (TypeError). Dropout rates outside [0, 1) were accepted.
"""
import os

import pytest

from experiments import config_errors
from experiments import launch
from experiments import flip_workflow
from experiments import stages
from experiments import workflow
from experiments.configs import flip_finetune
from experiments.configs import flip_pretrain
from flip_jax.train import config_compat
from tests.reliability import launch_errors_test as ltest  # pylint: disable=g-bad-import-order

PRE = "--config=experiments/configs/flip_pretrain.py:dataset=synthetic"


_run = ltest._run


def _one_error(proc) -> str:
  """launch_errors_test's single `error:` line, and no absl FATAL either."""
  line = ltest._one_error(proc)
  assert "FATAL" not in proc.stderr
  return line


# ------------------------------------------------------------ the messages
def test_unknown_misspelt_and_renamed_keys():
  pre = flip_pretrain.get_config("dataset=synthetic")
  ft = flip_finetune.get_config("dataset=synthetic")
  assert config_errors.unknown_key(pre, "train.max_steps") is None
  assert config_errors.unknown_key(pre, "model.plm.dropout") is None
  assert config_errors.unknown_key(pre, "nope") == (
      "no field 'nope' in the config")
  assert config_errors.unknown_key(pre, "data.mlm_mask_ratio") == (
      "no field 'mlm_mask_ratio' in data; did you mean data.ctr_mask_ratio?")
  assert config_errors.unknown_key(pre, "total_steps", "--config.") == (
      "renamed to train.max_steps (--config.train.max_steps)")
  assert config_errors.unknown_key(pre, "pretrain.batch_size") == (
      "renamed to train.batch_size")
  assert config_errors.unknown_key(ft, "finetune.max_steps") == (
      "renamed to train.max_steps")
  assert config_errors.unknown_key(ft, "finetune.num_epochs") == (
      "renamed to train.num_epochs")
  assert config_errors.unknown_key(ft, "finetune.loss_reduction") == (
      "renamed to loss.reduction")
  assert config_errors.unknown_key(pre, "train.max_steps.x").startswith(
      "train.max_steps is a value")


def test_renamed_table_is_the_upgrade():
  """One table: every old key it names is what `upgrade` moves."""
  tasks = {"pretrain.": "flip_pretrain", "total_steps": "flip_pretrain",
           "finetune.": "flip_finetune", "train.": "ctr", "optim.": "ctr"}
  for old, new in config_compat.RENAMED.items():
    task = next(t for p, t in tasks.items() if old.startswith(p))
    c = {"task": task, "pretrain": {}, "finetune": {}, "train": {},
         "optim": {}}
    *parents, leaf = old.split(".")
    node = c
    for p in parents:
      node = node[p]
    node[leaf] = 12345
    up = config_compat.upgrade(c)
    node = up
    for p in new.split("."):
      node = node[p]
    assert node == 12345, (old, new)


def test_apply_overrides_errors_name_key_and_fix():
  cfg = flip_finetune.get_config("dataset=synthetic")
  with pytest.raises(config_errors.ConfigKeyError,
                     match=r"^override finetune\.max_steps=5: renamed to "
                     r"train\.max_steps$"):
    stages.apply_overrides(cfg, {"finetune.max_steps": "5"})
  with pytest.raises(config_errors.ConfigKeyError,
                     match="did you mean data.ctr_mask_ratio"):
    stages.apply_overrides(cfg, {"data.mlm_mask_ratio": "0.2"})
  with pytest.raises(config_errors.ConfigKeyError,
                     match=r"train\.max_steps=abc: expected an int value"):
    stages.apply_overrides(cfg, {"train.max_steps": "abc"})
  err = pytest.raises(ValueError, stages.apply_overrides, cfg,
                      {"train.max_steps": "abc"})
  assert launch.is_expected(err.value)  # one line at the launcher
  stages.apply_overrides(cfg, {"train.max_steps": "7"})
  assert cfg.train.max_steps == 7


def test_check_overrides_refuses_before_any_stage():
  configs = workflow.check_configs(
      flip_workflow.SPEC, workflow.Args(dataset="synthetic", preset="tiny",
                                        plm="minilm-l6", ctr="dcnv2"), "", 1)
  stages.check_overrides({"train.max_steps": "3",
                            "pretrain:pretrain.mlm.weight": "0.5"}, configs)
  for key, value, want in (
      ("total_steps", "3", "renamed to train.max_steps"),
      ("finetune.num_epochs", "2", "renamed to train.num_epochs"),
      ("nope.x", "1", "no field 'nope' in the config"),
      ("train.max_steps", "abc", "expected an int value"),
      ("pretrain:finetune.mode", "id", "no field 'finetune'")):
    with pytest.raises(config_errors.ConfigKeyError, match=want):
      stages.check_overrides({key: value}, configs)


# ---------------------------------------------------------- the launchers
def test_train_launcher_unknown_renamed_and_misspelt_keys(tmp_path):
  w = f"--workdir={tmp_path / 'w'}"
  assert _one_error(_run("train", w, PRE, "--config.nope=1")) == (
      "error: --config.nope: no field 'nope' in the config")
  assert _one_error(_run("train", w, PRE,
                         "--config.data.mlm_mask_ratio=0.2")) == (
      "error: --config.data.mlm_mask_ratio: no field 'mlm_mask_ratio' in "
      "data; did you mean data.ctr_mask_ratio?")
  assert _one_error(_run("train", w, PRE, "--config.total_steps=3")) == (
      "error: --config.total_steps: renamed to train.max_steps "
      "(--config.train.max_steps)")
  # A config file's own error: its last line, not the traceback it embeds.
  assert _one_error(_run("train", w, PRE + "x")) == (
      f"error: {PRE}x: Error whilst parsing config file: ValueError: "
      "unknown dataset 'syntheticx'; known datasets: synthetic, ml-1m, "
      "ml-100k, bookcrossing, goodreads, csv")
  assert not (tmp_path / "w").exists()


def test_default_config_launchers_and_wrong_types(tmp_path):
  w = f"--workdir={tmp_path / 'w'}"
  # The default config file is parsed when --config is defined.
  assert _one_error(_run("finetune", w, "--config.finetune.max_steps=3")) \
      == ("error: --config.finetune.max_steps: renamed to train.max_steps "
          "(--config.train.max_steps)")
  assert _one_error(_run("train", w, PRE, "--config.train.max_steps=abc")) \
      == ("error: --config.train.max_steps=abc: expected an int value, not "
          "'abc' (invalid literal for int() with base 10: 'abc')")
  line = _one_error(_run("predict", "--nope=1"))
  assert line == ("error: Unknown command line flag 'nope' (--helpshort "
                  "lists the flags)")
  verbose = _run("pretrain", w, "--config.nope=1", "--verbosity=1")
  assert verbose.returncode == 1 and "Traceback" in verbose.stderr
  assert verbose.stderr.rstrip().endswith(
      "error: --config.nope: no field 'nope' in the config")
  assert not (tmp_path / "w").exists()


def test_run_all_set_errors(tmp_path):
  w = f"--workdir={tmp_path / 'w'}"
  line = _one_error(_run("run_all", w, "--preset=tiny",
                         "--set=finetune.num_epochs=2"))
  assert line == ("error: override finetune.num_epochs=2: renamed to "
                  "train.num_epochs (in the finetune stages' config)")
  line = _one_error(_run("run_all", w, "--preset=tiny",
                         "--set=train.max_steps=abc"))
  assert line.startswith("error: override train.max_steps=abc: expected an "
                         "int value")
