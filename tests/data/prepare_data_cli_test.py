"""experiments.prepare_data: outputs, printed prompts and CLI errors."""
import json
import os
import subprocess
import sys

from experiments import prepare_data
from experiments.configs import data as data_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def test_run_writes_stats_and_feature_map(tmp_path, capsys):
  cfg = data_config.get_config("dataset=synthetic")
  cfg.synthetic.num_users, cfg.synthetic.num_movies = 50, 40
  cfg.synthetic.num_ratings = 600
  cfg.max_length = 40
  stats = prepare_data.run(cfg, str(tmp_path))
  on_disk = json.loads((tmp_path / "stats.json").read_text())
  for k in ("rows", "train_rows", "valid_rows", "test_rows", "num_fields",
            "field_names", "vocab_sizes", "positive_rate", "max_text_tokens",
            "truncated_rows"):
    assert on_disk[k] == stats[k], k
  assert on_disk["rows"] == 600 and on_disk["max_length"] == 40
  # The default cache root: beside the workdir (prepare.default_cache_root).
  assert on_disk["cache_dir"].startswith(
      str(tmp_path.parent / ".flip_jax_cache") + os.sep)
  fm = json.loads((tmp_path / "feature_map.json").read_text())
  assert fm["num_fields"] == 8 and fm["split_sizes"]["train"] == 480
  out = capsys.readouterr().out
  assert out.count("User ID is [") == 3 and "Film genre is [" in out


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "experiments.prepare_data",
                         *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=120, check=False)


def test_cli_errors_and_overrides(tmp_path):
  bad = _cli("--dataset=nope", f"--workdir={tmp_path}")
  assert bad.returncode != 0
  assert "known datasets: synthetic, ml-1m, ml-100k" in bad.stderr
  missing = _cli("--dataset=ml-100k", f"--data_dir={tmp_path}",
                 f"--workdir={tmp_path / 'w'}", "--config.max_length=50")
  assert missing.returncode == 1
  assert "missing u.data, u.user, u.item" in missing.stderr
  ok = _cli("--dataset=synthetic", f"--workdir={tmp_path / 'ok'}",
            "--config.synthetic.num_ratings=500",
            "--config.synthetic.num_users=40",
            "--config.synthetic.num_movies=30",
            "--config.max_length=32")
  assert ok.returncode == 0, ok.stderr[-2000:]
  stats = json.loads((tmp_path / "ok" / "stats.json").read_text())
  assert stats["rows"] == 500 and stats["max_length"] == 32
  assert stats["truncated_rows"] > 0  # 32 tokens cut the ML prompts
