"""Every config field can be overridden from the command line: a field
whose default is None is declared with its type (a placeholder), since
ml_collections refuses ``--config.<key>=<value>`` for a NoneType field
(``--config.model.plm.dropout=0.0`` used to fail)."""
import importlib
import os
import subprocess
import sys

import ml_collections as mlc
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(REPO, "experiments", "configs")
MODULES = sorted(f[:-3] for f in os.listdir(CONFIG_DIR)
                 if f.endswith(".py") and not f.startswith("_"))


def _untyped(cfg, prefix=""):
  for key in cfg.keys():
    value = cfg[key]
    if isinstance(value, mlc.ConfigDict):
      yield from _untyped(value, f"{prefix}{key}.")
    elif cfg.get_type(key) is type(None):
      yield prefix + key


@pytest.mark.parametrize("name", MODULES)
def test_no_field_is_untyped_none(name):
  module = importlib.import_module(f"experiments.configs.{name}")
  if not hasattr(module, "get_config"):
    pytest.skip(f"{name} has no get_config")
  presets = getattr(module, "PRESETS", (None,))
  for preset in presets:
    arg = f"preset={preset}" if preset else None
    try:
      cfg = module.get_config(arg)
    except ValueError:  # a config that does not take this preset
      continue
    assert list(_untyped(cfg)) == [], (name, preset)


def test_a_typed_none_field_takes_a_command_line_value(tmp_path):
  code = ("import sys; from experiments import pretrain; "
          "from absl import flags; flags.FLAGS(sys.argv); "
          "c = flags.FLAGS['config'].value; "
          "print('got', c.model.plm.dropout, c.model.plm.num_layers, "
          "c.optim.grad_clip, c.pretrain.mtm.attn_scale, "
          "c.model.plm.attention_dropout)")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-c", code, f"--workdir={tmp_path}",
       "--config=experiments/configs/flip_pretrain.py:preset=full",
       "--config.model.plm.dropout=0.05", "--config.model.plm.num_layers=3",
       "--config.optim.grad_clip=1.0", "--config.pretrain.mtm.attn_scale=0.5"],
      cwd=REPO, env=env, capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "got 0.05 3 1.0 0.5 None" in proc.stdout
