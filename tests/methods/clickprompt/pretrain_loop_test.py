"""PA-MLM on the shared loop, tiny synthetic data: the loss falls, and a run
resumed from its step-10 checkpoint ends bit for bit where the
uninterrupted run ended."""
import json
import os
import shutil

import jax
import numpy as np
import pytest

from experiments.configs import clickprompt_pretrain
from flip_jax import checkpoint
from flip_jax import methods
from flip_jax.train import loop


def tiny_config(plm_dir, cache_dir, **extra):
  """The tiny preset with a tiny random BERT (shared with the finetuning
  and export tests)."""
  cfg = clickprompt_pretrain.get_config("dataset=synthetic,preset=tiny")
  cfg.model.plm.name = str(plm_dir)
  cfg.model.plm.num_layers = 2
  cfg.model.ctr.update(embed_dim=8, dnn_hidden=(16, 16), cross_layers=2)
  cfg.data.cache_dir = str(cache_dir)
  cfg.data.max_length = 40
  cfg.data.synthetic.update(num_users=80, num_movies=60, num_ratings=1600)
  cfg.clickprompt.num_prompt = 3
  cfg.log_every_steps = 2
  cfg.ckpt.async_save = False
  for key, value in extra.items():
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return cfg


def train(cfg, workdir):
  return loop.train_and_evaluate(cfg, str(workdir), methods.make_task(cfg))


def final_params(workdir):
  step = checkpoint.Checkpointer(workdir, max_to_keep=None,
                                 save_interval_steps=1).latest_step()
  return step, checkpoint.restore_params(workdir, step=step)


@pytest.mark.timeout(600)
# slow: the shared loop's bitwise resume is covered by tests/methods/flip/pretrain_loop_test.py.
@pytest.mark.slow
def test_loss_falls_and_resume_is_bitwise(tiny_bert_dir, tmp_path):
  cfg = tiny_config(tiny_bert_dir, tmp_path / "cache",
                    **{"train.max_steps": 20, "ckpt.every_steps": 10})
  run = tmp_path / "run"
  train(cfg, run)
  with open(run / "metrics.jsonl") as f:
    recs = [json.loads(line) for line in f]
  assert recs[-1]["step"] == 20
  first = np.mean([r["train/mlm_loss"] for r in recs[:2]])
  last = np.mean([r["train/mlm_loss"] for r in recs[-2:]])
  assert last < first - 0.2, (first, last)
  assert all(r["train/mlm_masked_tokens"] > 0 for r in recs)
  step, p20 = final_params(run)
  assert step == 20
  assert set(p20) == {"ctr", "plm", "prompt_generator", "lm_head",
                      "lm_decoder"}

  # A crash after step 10: the step-20 checkpoint is lost; the same command
  # resumes from step 10 (state, RNG, data position) and ends identically.
  shutil.rmtree(os.path.join(run, checkpoint.CHECKPOINT_DIR, "20"))
  train(tiny_config(tiny_bert_dir, tmp_path / "cache",
                    **{"train.max_steps": 20, "ckpt.every_steps": 10}), run)
  step, again = final_params(run)
  assert step == 20
  jax.tree.map(np.testing.assert_array_equal, p20, again)
