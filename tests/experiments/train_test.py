"""The training launchers: ``experiments.train`` and its three aliases.

* ``experiments.train`` (the one launcher) trains a tiny ``ctr`` task from
  its command line, and refuses to start without ``--config``.
* ``experiments.pretrain`` / ``finetune`` / ``train_ctr`` take the command
  lines README.md shows (on synthetic data at tiny sizes): pretraining,
  finetuning from it with ``--config.ckpt.init_from``, the ID model.
* Each alias, alone in a process, defaults to its own config file.
"""
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from experiments import finetune
from experiments import pretrain
from experiments import train
from experiments import train_ctr
from flip_jax import checkpoint

from tests.methods import ctr_test  # pylint: disable=g-bad-import-order
from tests.helpers import env as env_lib  # pylint: disable=g-bad-import-order

REPO = pathlib.Path(__file__).resolve().parents[2]
ALIASES = {"pretrain": ("flip_pretrain", pretrain.main),
           "finetune": ("flip_finetune", finetune.main),
           "train_ctr": ("ctr", train_ctr.main)}
# Tiny sizes appended to a README command line, per launcher.
_MODEL = ["--config.model.ctr.embed_dim=8", "--config.model.ctr.low_rank=4",
          "--config.model.ctr.dnn_hidden=(16,8)",
          "--config.model.ctr.num_experts=2"]
_DATA = ["--config.data.synthetic.num_users=60",
         "--config.data.synthetic.num_movies=50",
         "--config.data.synthetic.num_ratings=1500"]
TINY = {
    "pretrain": _MODEL + _DATA + [
        "--config.model.plm.num_layers=1", "--config.pretrain.proj_dim=16",
        "--config.pretrain.mtm.field_dim=8", "--config.train.batch_size=16",
        "--config.train.max_steps=2", "--config.ckpt.every_steps=2",
        "--config.log_every_steps=1"],
    "finetune": _MODEL + _DATA + [
        "--config.train.batch_size=16", "--config.train.max_steps=2",
        "--config.train.eval_every_steps=2",
        "--config.train.eval_batch_size=64", "--config.log_every_steps=1"],
    "train_ctr": _DATA + ["--config.train.batch_size=32",
                          "--config.train.max_steps=2",
                          "--config.train.eval_every_steps=2",
                          "--config.model.ctr.embed_dim=8",
                          "--config.model.ctr.dnn_hidden=(16,8)",
                          "--config.model.ctr.low_rank=4"],
}


def readme_commands() -> dict[str, list[str]]:
  """{launcher: arguments} of the ``python -m experiments.<x>`` lines."""
  text = re.sub(r"\\\n\s*", " ", (REPO / "README.md").read_text())
  out = {}
  for line in text.splitlines():
    m = re.match(r"\s*python -m experiments\.(\w+) (.*)$", line)
    if m and m.group(1) in ALIASES:
      out[m.group(1)] = shlex.split(m.group(2))
  return out


def tiny_command(args, tmp_path, plm_dir, cache_dir) -> list[str]:
  """A README command line on synthetic data, its runs/ under tmp_path."""
  out = []
  for arg in args:
    key, _, value = arg.partition("=")
    if key == "--config":
      path, _, variant = value.partition(":")
      fields = dict(kv.split("=", 1) for kv in variant.split(",") if kv)
      fields["dataset"] = "synthetic"
      if "plm" in fields:
        fields["plm"] = str(plm_dir)
      if "flip_" in path:
        fields["preset"] = "tiny"
      value = f"{REPO / path}:" + ",".join(f"{k}={v}"
                                            for k, v in fields.items())
    elif value.startswith("runs/"):
      value = str(tmp_path / value)
    out.append(f"{key}={value}")
  return out + [f"--config.data.cache_dir={cache_dir}"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("launcher_cache")


def test_train_main_runs_a_ctr_task_from_the_command_line(cache_dir,
                                                          tmp_path):
  workdir = tmp_path / "run"
  argv = ["train", f"--config={ctr_test.CONFIG}:dataset=synthetic,model=fm",
          f"--workdir={workdir}", f"--config.data.cache_dir={cache_dir}",
          *ctr_test.SMALL]
  config = ctr_test.run_main(train.main, argv)
  assert config.task == "ctr" and config.model.ctr.name == "fm"
  with open(workdir / "results.json") as f:
    res = json.load(f)
  assert res["task"] == "ctr" and res["model"] == "fm" and res["steps"] == 5
  assert 0.0 <= res["test/auc"] <= 1.0
  with open(workdir / "config.json") as f:
    assert json.load(f)["train"]["max_steps"] == 5


def test_readme_has_a_command_line_per_alias(tmp_path, tiny_bert_dir,
                                            cache_dir):
  """The fast twin of the run below: every alias has its README line, and
  its config file and variant build the alias's task."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  commands = readme_commands()
  assert set(commands) == set(ALIASES), "README lost a launcher line"
  for name, line in commands.items():
    argv = dict(a.split("=", 1) for a in tiny_command(
        line, tmp_path, tiny_bert_dir, cache_dir))
    assert "--workdir" in argv, (name, line)
    path, _, variant = argv["--config"].partition(":")
    spec = importlib.util.spec_from_file_location("readme_cfg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.get_config(variant).task == ALIASES[name][0], name


@pytest.mark.slow  # ~53 s; the twin above and run_all_test cover the chain
def test_readme_command_lines_of_the_aliases(tiny_bert_dir, cache_dir,
                                             tmp_path):
  commands = readme_commands()
  # pretrain, then finetune from it (init_from=runs/pre), then train_ctr.
  for name in ("pretrain", "finetune", "train_ctr"):
    task, main = ALIASES[name]
    argv = [name, *tiny_command(commands[name], tmp_path, tiny_bert_dir,
                                cache_dir), *TINY[name]]
    config = ctr_test.run_main(main, argv)
    assert config.task == task, name
  runs = tmp_path / "runs"
  with open(runs / "pre" / "config.json") as f:
    pre_cfg = json.load(f)
  assert pre_cfg["task"] == "flip_pretrain"
  assert pre_cfg["model"]["plm"]["name"] == str(tiny_bert_dir)
  with checkpoint.Checkpointer(str(runs / "pre"), max_to_keep=None,
                               save_interval_steps=1) as c:
    assert c.latest_step() == 2
  with open(runs / "ft" / "results.json") as f:
    ft = json.load(f)
  assert ft["task"] == "flip_finetune" and ft["mode"] == "joint"
  assert ft["init_from"] == str(runs / "pre")
  assert ft["init_rule"].startswith("init_from") and ft["steps"] == 2
  with open(runs / "dcnv2" / "results.json") as f:
    ctr = json.load(f)
  assert ctr["task"] == "ctr" and ctr["model"] == "dcnv2"


def _python(code_or_module, *args, module=False):
  env = env_lib.child_env(devices=1)
  cmd = [sys.executable, *(["-m", code_or_module] if module
                           else ["-c", code_or_module]), *args]
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True,
                        text=True, check=False)


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_alias_alone_defaults_to_its_config(alias, tmp_path):
  proc = _python(
      f"import sys; from experiments import {alias} as m; "
      "from absl import flags; flags.FLAGS(sys.argv); "
      "print('task', flags.FLAGS['config'].value.task); "
      "print('jax imported', 'jax' in sys.modules)",
      f"--workdir={tmp_path}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"task {ALIASES[alias][0]}" in proc.stdout
  # The launcher and its config file import no jax: a mistake in the flags
  # or the config is reported before jax is loaded (experiments/launch.py).
  assert "jax imported False" in proc.stdout, proc.stdout


def test_train_requires_a_config(tmp_path):
  proc = _python("experiments.train", f"--workdir={tmp_path}", module=True)
  assert proc.returncode != 0
  assert "--config is required" in proc.stderr
