"""An export replaces only an earlier export, never the folder it is given.

Defect class: `export_torch --out=<dir>` atomically replaced whatever <dir>
was (a folder of the user's files, the training run's workdir, an earlier
export to which the user had added files). Now every export holds
`flip_jax_export.json` listing the files it wrote; a destination that is a
file, a folder of other files, an earlier export holding files it did not
write, or the run's workdir (or inside / around it) is refused before any
work, naming what is in the way, and its files stay.
"""
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from flip_jax.export import hf_export
from flip_jax.methods import run_export
from flip_jax.models import plm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def tiny():
  cfg = plm.PLMConfig("bert", 50, 8, 1, 2, 16, 16)
  ids = jnp.zeros((1, 4), jnp.int32)
  params = plm.PLMEncoder(cfg).init(jax.random.key(0), ids, ids + 1)["params"]
  return cfg, params


def test_user_folder_is_refused_and_kept(tiny, tmp_path):
  cfg, params = tiny
  mine = tmp_path / "mine"
  mine.mkdir()
  (mine / "notes.txt").write_text("precious")
  with pytest.raises(hf_export.ExportDestinationError,
                     match=r"refusing to replace .*mine: it is not an earlier "
                     r"export \(no flip_jax_export.json\) and holds "
                     r"\['notes.txt'\]"):
    hf_export.export_hf(cfg, params, mine)
  assert (mine / "notes.txt").read_text() == "precious"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temps


def test_file_destination_is_refused(tiny, tmp_path):
  cfg, params = tiny
  (tmp_path / "f").write_text("x")
  with pytest.raises(hf_export.ExportDestinationError, match="is a file"):
    hf_export.export_hf(cfg, params, tmp_path / "f")
  with pytest.raises(hf_export.ExportDestinationError, match="is a file, not"):
    hf_export.export_hf(cfg, params, tmp_path / "f" / "sub")
  assert (tmp_path / "f").read_text() == "x"


def test_new_empty_and_earlier_export_are_written(tiny, tmp_path):
  cfg, params = tiny
  out = hf_export.export_hf(cfg, params, tmp_path / "new" / "deep")
  assert hf_export.is_export(out)
  (out / "stale.bin").write_text("from the earlier export")
  hf_export.write_marker(out, "hf_plm")  # the earlier export wrote it
  hf_export.export_hf(cfg, params, out)  # an earlier export: replaced
  assert not (out / "stale.bin").exists() and hf_export.is_export(out)
  (tmp_path / "empty").mkdir()
  assert hf_export.is_export(hf_export.export_hf(cfg, params,
                                                 tmp_path / "empty"))
  # A marker file that is not ours does not count.
  fake = tmp_path / "fake"
  fake.mkdir()
  (fake / hf_export.EXPORT_MARKER).write_text('{"format": "other"}')
  with pytest.raises(hf_export.ExportDestinationError):
    hf_export.export_hf(cfg, params, fake)


def test_reexport_keeps_files_added_to_an_export(tiny, tmp_path):
  """Re-exporting into an earlier export to which the user added files is
  refused, naming them, before any work; every file stays as it was."""
  cfg, params = tiny
  out = hf_export.export_hf(cfg, params, tmp_path / "exp")
  (out / "notes.txt").write_text("precious")
  (out / "results").mkdir()
  (out / "results" / "eval.csv").write_text("auc,0.8")
  before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
  with pytest.raises(hf_export.ExportDestinationError,
                     match=r"refusing to replace .*exp: it is an earlier "
                     r"export, but holds files the export did not write: "
                     r"\['notes.txt', 'results'\]; move them out"):
    hf_export.export_hf(cfg, params, out)
  assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]  # no temps
  (out / "notes.txt").unlink()
  shutil.rmtree(out / "results")
  (out / "check.json").write_text("{}")  # a workflow's parity record
  assert hf_export.is_export(hf_export.export_hf(cfg, params, out))


def test_finetuned_export_with_plm_names_a_file_added_inside(tmp_path):
  out = tmp_path / "ft"
  (out / "plm").mkdir(parents=True)
  for name in ("model.safetensors", "config.json"):
    (out / "plm" / name).write_text("x")
  hf_export.write_marker(out / "plm", "hf_plm")
  (out / "flip_ctr.json").write_text("{}")
  hf_export.write_marker(out, "flip_ctr")
  assert run_export.check_destination(out) == out.resolve()
  (out / "plm" / "mine.md").write_text("x")
  with pytest.raises(hf_export.ExportDestinationError,
                     match=r"\['plm/mine.md'\]"):
    run_export.check_destination(out)


def test_marker_without_file_list_is_matched_by_export_names(tmp_path):
  """Exports written before the marker listed its files (version 1)."""
  old = tmp_path / "old"
  (old / "plm").mkdir(parents=True)
  for name in ("flip_ctr.json", "ctr_model.safetensors", "plm/config.json",
               "plm/vocab.txt", "check.json"):
    (old / name).write_text("{}")
  (old / hf_export.EXPORT_MARKER).write_text(
      '{"format": "flip_jax_export", "kind": "flip_ctr", "version": 1}')
  assert hf_export.foreign_entries(old) == []
  (old / "plm" / "notes.txt").write_text("x")
  (old / "mine").mkdir()
  assert hf_export.foreign_entries(old) == ["mine", "plm/notes.txt"]


def test_workdir_and_inside_it_are_refused_before_loading(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text("{}")  # loading it would fail later
  for out, match in ((workdir, r"it is the run's --workdir"),
                     (workdir / "torch", r"it is inside the run's --workdir"),
                     (tmp_path, r"it contains the run's --workdir")):
    with pytest.raises(hf_export.ExportDestinationError, match=match):
      run_export.export_run(workdir, out)
  assert sorted(p.name for p in workdir.iterdir()) == ["config.json"]


def test_legacy_ctr_export_without_marker_is_recognised(tmp_path):
  old = tmp_path / "old"
  (old / "plm").mkdir(parents=True)
  for name in ("flip_ctr.json", "ctr_model.safetensors", "check.json"):
    (old / name).write_text("{}")
  assert run_export.check_destination(old) == old.resolve()
  (old / "mine.txt").write_text("x")
  with pytest.raises(hf_export.ExportDestinationError, match="mine.txt"):
    run_export.check_destination(old)


def test_cli_refuses_workdir_as_out_in_one_line(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text("{}")
  (workdir / "best").mkdir()
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.export_torch",
       f"--workdir={workdir}", f"--out={workdir}"], cwd=ROOT,
      capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 1, proc.stderr[-2000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert errors == [f"error: export: refusing --out {workdir}: it is the "
                    f"run's --workdir {workdir}; choose a folder outside it"]
  assert "Traceback" not in proc.stderr
  assert sorted(p.name for p in workdir.iterdir()) == ["best", "config.json"]
