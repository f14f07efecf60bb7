"""Launchers: one `error:` line naming the file or field, exit 1, no noise.

Defect classes: expected errors (bad data, configs, checkpoints, truncated
files, a PLM folder without tokenizer) ended in tracebacks;
`experiments.predict` checked --out only after scoring and left a stray
temporary file, and --workdir=<a file> gave a traceback.
"""
import gzip
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import launch
from experiments import predict
from flip_jax import jsonio
from flip_jax import methods
from flip_jax.data import rawio
from flip_jax.data import synthetic
from flip_jax.data import tokenize as tokenize_lib
from flip_jax.train import finished

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _run(module, *args, env=None):
  return subprocess.run([sys.executable, "-m", f"experiments.{module}", *args],
                        cwd=ROOT, capture_output=True, text=True, timeout=300,
                        check=False, env=dict(os.environ, **(env or {})))


def _one_error(proc) -> str:
  """The single `error:` line; asserts rc 1 and no traceback anywhere."""
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1, proc.stderr[-3000:]
  # Nothing after the message (no shutdown noise).
  assert proc.stderr.rstrip().endswith(errors[0])
  return errors[0]


def test_train_ctr_missing_data_dir(tmp_path):
  nope = tmp_path / "nope"
  line = _one_error(_run(
      "train_ctr", f"--workdir={tmp_path / 'w'}",
      "--config=experiments/configs/ctr.py:dataset=ml-1m,model=dcnv2",
      f"--config.data.data_dir={nope}"))
  assert str(nope) in line and "is not a directory" in line


def test_prepare_data_truncated_gzip_and_shifted_rows(tmp_path):
  raw = tmp_path / "raw"
  synthetic.generate(str(raw), num_users=8, num_movies=6, num_ratings=20,
                     seed=0)
  blob = gzip.compress((raw / "ratings.dat").read_bytes())
  os.remove(raw / "ratings.dat")
  (raw / "ratings.dat.gz").write_bytes(blob[:len(blob) // 2])
  line = _one_error(_run("prepare_data", "--dataset=ml-1m",
                         f"--data_dir={raw}", f"--workdir={tmp_path / 'w'}"))
  assert line == (f"error: {raw}/ratings.dat.gz: truncated or corrupt gzip "
                  "file (Compressed file ended before the end-of-stream "
                  "marker was reached)")
  # The traceback is there on request.
  verbose = _run("prepare_data", "--dataset=ml-1m", f"--data_dir={raw}",
                 f"--workdir={tmp_path / 'w'}",
                 env={launch.TRACEBACK_ENV: "1"})
  assert verbose.returncode == 1 and "Traceback" in verbose.stderr
  assert "error: " in verbose.stderr


def test_pretrain_plm_folder_without_tokenizer(tmp_path):
  plm_dir = tmp_path / "plm"
  plm_dir.mkdir()
  (plm_dir / "config.json").write_text("{}")
  line = _one_error(_run(
      "pretrain", f"--workdir={tmp_path / 'w'}",
      "--config=experiments/configs/flip_pretrain.py:dataset=synthetic",
      f"--config.model.plm.name={plm_dir}"))
  assert line.startswith(f"error: model.plm.name {plm_dir}: the folder has "
                         "no tokenizer files")


def _finished_run_folder(run):
  """The files by which a folder reads as a finished finetuning run."""
  (run / "best" / "checkpoints" / "1").mkdir(parents=True)
  (run / "config.json").write_text('{"task": "flip_finetune"}')
  (run / "results.json").write_text("{}")


def test_predict_validates_arguments_before_work(tmp_path):
  afile = tmp_path / "afile"
  afile.write_text("x")
  line = _one_error(_run("predict", f"--workdir={afile}",
                         f"--out={tmp_path / 'p.parquet'}"))
  assert line == f"error: --workdir {afile} is a file, not a finetuning " \
                 "run folder"
  run = tmp_path / "run"
  run.mkdir()
  _finished_run_folder(run)
  out_dir = tmp_path / "outdir"
  out_dir.mkdir()
  line = _one_error(_run("predict", f"--workdir={run}", f"--out={out_dir}"))
  assert line.startswith(f"error: --out {out_dir} is a folder")
  assert list(out_dir.iterdir()) == [] and sorted(
      p.name for p in tmp_path.iterdir()) == ["afile", "outdir", "run"]


def test_predict_check_args_unit(tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  with pytest.raises(finished.NotAFinishedRunError, match="no config.json"):
    predict.check_args(str(run), str(tmp_path / "p.csv"), 8)
  _finished_run_folder(run)
  assert predict.check_args(str(run), str(tmp_path / "a/b/p.csv"), 8) == "csv"
  assert predict.check_args(str(run), str(tmp_path / "p.parquet"), 8) == \
      "parquet"
  with pytest.raises(ValueError, match="must end in .parquet or .csv"):
    predict.check_args(str(run), str(tmp_path / "p.txt"), 8)
  with pytest.raises(ValueError, match="--batch_size 0"):
    predict.check_args(str(run), str(tmp_path / "p.csv"), 0)
  (tmp_path / "f").write_text("x")
  with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
    predict.check_args(str(run), str(tmp_path / "f" / "p.csv"), 8)


def test_predict_write_is_atomic(tmp_path, monkeypatch):
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  table = pa.table({"prob": np.array([0.5, 0.25])})
  out = tmp_path / "p.parquet"
  predict.write_table_atomic(table, str(out), "parquet")
  assert pq.read_table(out).to_pydict()["prob"] == [0.5, 0.25]

  def boom(*a, **k):
    raise OSError("disk full")

  monkeypatch.setattr(pq, "write_table", boom)
  with pytest.raises(OSError, match="disk full"):
    predict.write_table_atomic(table, str(out), "parquet")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["p.parquet"]
  assert pq.read_table(out).num_rows == 2  # the earlier file is intact


def test_error_message_names_file_or_field(tmp_path):
  # pylint: disable-next=g-import-not-at-top
  from safetensors.numpy import load_file, save_file
  st = tmp_path / "model.safetensors"
  save_file({"w": np.zeros((64, 64), np.float32)}, str(st))
  st.write_bytes(st.read_bytes()[:100])
  with pytest.raises(Exception) as info:
    load_file(str(st))
  assert launch.is_expected(info.value)
  msg = launch.error_message(info.value)
  assert msg.startswith("SafetensorError: ") and msg.endswith(f"(file {st})")
  assert launch.error_message(KeyError("data.csv.path: no such field")) == \
      "data.csv.path: no such field"
  (tmp_path / "bad.json").write_text("{oops")
  with pytest.raises(jsonio.JSONFileError) as info:
    jsonio.read_json(tmp_path / "bad.json")
  assert launch.is_expected(info.value)
  assert launch.error_message(info.value).startswith(
      f"{tmp_path}/bad.json: invalid JSON at line 1")
  big = rawio.DataError("a\nb")
  assert launch.error_message(big) == "a b"  # always one line
  assert not launch.is_expected(AttributeError("a bug"))


def test_every_launcher_uses_run_main():
  for name in ("train", "pretrain", "finetune", "train_ctr", "run_all",
               "predict", "export_torch", "prepare_data"):
    with open(os.path.join(ROOT, "experiments", f"{name}.py")) as f:
      text = f.read()
    main_block = text.split('if __name__ == "__main__":')[1]
    assert "launch.run_main(main)" in main_block, name
    assert "app.run(" not in main_block, name


def test_tokenizer_folder_checks(tmp_path):
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(FileNotFoundError, match=r"config.tokenizer .*: the "
                     "folder has no tokenizer files"):
    tokenize_lib.check_tokenizer_folder(str(tmp_path), "config.tokenizer")
  # A short name is the PLM registry's.
  tokenize_lib.check_tokenizer_folder("minilm-l6", "config.tokenizer")
  ctr = {"task": "ctr", "model": {"plm": {"name": str(tmp_path)}}}
  methods.check_plm_folder(ctr)  # the ID task reads no text
  (tmp_path / "vocab.txt").write_text("[PAD]\n")
  methods.check_plm_folder(dict(ctr, task="flip_pretrain"))


@pytest.mark.parametrize("config,reads", [
    ({"task": "flip_pretrain"}, True),
    ({"task": "flip_finetune", "finetune": {"mode": "id"}}, False),
    ({"task": "flip_finetune", "finetune": {"mode": "joint"}}, True),
    ({"task": "clickprompt_pretrain"}, True),
    ({"task": "clickprompt_finetune", "finetune": {"mode": "ctr_only"}}, False),
    ({"task": "clickprompt_finetune", "finetune": {"mode": "prefix_add"}},
     True),
    ({"task": "ctr_bert"}, True), ({"task": "p_tab_pretrain"}, True),
    ({"task": "ctr"}, False), ({"task": "srp4ctr"}, False),
    ({"task": "no_such_task"}, False),
])
def test_reading_text_is_a_fact_of_the_task(tmp_path, config, reads):
  """The early tokenizer check covers every task that tokenizes text
  (ClickPrompt, CTR-BERT and P-Tab were skipped when it listed FLIP's)."""
  assert methods.reads_text(config) is reads
  config = dict(config, model={"plm": {"name": str(tmp_path)}})
  if reads:
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
      methods.check_plm_folder(config)
  else:
    methods.check_plm_folder(config)
