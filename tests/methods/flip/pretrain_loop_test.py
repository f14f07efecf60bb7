"""End-to-end pretraining on tiny synthetic data: losses, resume, hosts.

(A non-finite metric stopping the loop: tests/train/non_finite_stop_test.py.)"""
import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments.configs import flip_pretrain
from flip_jax import checkpoint
from flip_jax import methods
from flip_jax.train import loop
from tests.helpers import env as env_lib  # pylint: disable=g-bad-import-order

REPO = pathlib.Path(__file__).resolve().parents[3]


def tiny_overrides(plm_dir, cache_dir) -> dict:
  return {
      "model.plm.name": str(plm_dir), "model.plm.num_layers": 1,
      "model.ctr.dnn_hidden": (32, 16), "model.ctr.embed_dim": 8,
      "model.ctr.low_rank": 8, "model.ctr.num_experts": 2,
      "data.cache_dir": str(cache_dir), "data.max_length": 40,
      "data.synthetic.num_users": 80, "data.synthetic.num_movies": 60,
      "data.synthetic.num_ratings": 1600,
      "train.batch_size": 16, "pretrain.proj_dim": 16,
      "pretrain.mtm.field_dim": 8,
      "optim.lr": 3e-3, "log_every_steps": 2, "ckpt.async_save": False,
  }


def set_fields(cfg, values):
  """Sets dotted config fields ('train.max_steps') in place; returns cfg."""
  for key, value in values.items():
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return cfg


def make_config(plm_dir, cache_dir, **extra):
  cfg = flip_pretrain.get_config("dataset=synthetic,preset=tiny")
  return set_fields(cfg, {**tiny_overrides(plm_dir, cache_dir), **extra})


def train(cfg, workdir):
  """The shared loop on the task ``cfg.task`` names."""
  return loop.train_and_evaluate(cfg, str(workdir), methods.make_task(cfg))


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def final_params(workdir):
  step = checkpoint.Checkpointer(workdir, max_to_keep=None,
                                 save_interval_steps=1).latest_step()
  return step, checkpoint.restore_params(workdir, step=step)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("cache")


@pytest.mark.long
def test_losses_fall_and_resume_is_bitwise(tiny_bert_dir, cache_dir, tmp_path):
  full = tmp_path / "full"
  cfg = make_config(tiny_bert_dir, cache_dir,
                    **{"train.max_steps": 20, "ckpt.every_steps": 10})
  train(cfg, full)
  recs = read_metrics(full)
  assert recs[-1]["step"] == 20
  for key in ("train/mlm_loss", "train/mtm_loss", "train/icl_loss"):
    first = np.mean([r[key] for r in recs[:2]])
    last = np.mean([r[key] for r in recs[-2:]])
    assert last < first, (key, first, last)
  assert all(k in recs[-1] for k in ("train/loss", "examples_per_sec"))
  for name in ("config.json", "feature_map.json", "schedule.json"):
    assert (full / name).exists()
  # ICL on the fixed held-out batch in eval mode at every log step; its
  # rows are the config's heldout_rows (chance = 1 / rows).
  assert all("heldout/icl_acc" in r for r in recs)
  assert 1 < recs[-1]["heldout/icl_rows"] <= cfg.pretrain.heldout_rows
  assert 0.0 <= recs[-1]["heldout/icl_acc"] <= 1.0

  # Interrupted after step 10, then the same command again: identical params.
  part = tmp_path / "part"
  train(make_config(tiny_bert_dir, cache_dir,
                    **{"train.max_steps": 10, "ckpt.every_steps": 10}), part)
  train(make_config(tiny_bert_dir, cache_dir,
                    **{"train.max_steps": 20, "ckpt.every_steps": 10}), part)
  s1, p1 = final_params(full)
  s2, p2 = final_params(part)
  assert s1 == s2 == 20
  jax.tree.map(np.testing.assert_array_equal, p1, p2)
  # metrics.jsonl holds each step once after the resume.
  steps_logged = [r["step"] for r in read_metrics(part)]
  assert steps_logged == sorted(set(steps_logged))


# Both runs accumulate 2 micro-batches (ICL by cached gradients).
TWO_HOST_RUN = {"train.max_steps": 3, "ckpt.every_steps": 3,
                "train.micro_batch_size": 8}


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(args, devices, env_extra=None):
  env = env_lib.child_env(devices, **(env_extra or {}))
  return subprocess.Popen([sys.executable, "-m", "experiments.pretrain", *args],
                          cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _flags(plm_dir, cache_dir, workdir):
  flags = ["--config=experiments/configs/flip_pretrain.py:dataset=synthetic,"
           "preset=tiny", f"--workdir={workdir}"]
  for key, value in {**tiny_overrides(plm_dir, cache_dir),
                     **TWO_HOST_RUN}.items():
    flags.append(f"--config.{key}={value}")
  return flags


@pytest.mark.long
@pytest.mark.timeout(900)
def test_two_processes_equal_one(tiny_bert_dir, cache_dir, tmp_path):
  # The reference: the same config through the loop in this process, on
  # its one device (the sharded steps equal one device: multidevice tests).
  train(make_config(tiny_bert_dir, cache_dir, **TWO_HOST_RUN), tmp_path / "one")
  port = _free_port()
  procs = [
      _launch(_flags(tiny_bert_dir, cache_dir, tmp_path / "two") + [
          "--jax_distributed", f"--coordinator_address=127.0.0.1:{port}",
          "--num_processes=2", f"--process_id={i}"], 2)
      for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  _, p1 = final_params(tmp_path / "one")
  _, p2 = final_params(tmp_path / "two")
  # Same global batch and math; only reduction order across hosts differs.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-4), p1, p2)
  m1, m2 = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
  np.testing.assert_allclose(m1[-1]["train/loss"], m2[-1]["train/loss"],
                             rtol=1e-5)
