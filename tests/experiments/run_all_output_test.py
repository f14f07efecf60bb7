"""What `make demo` ends with: the results table, then the report's path
(experiments.run_all's stdout; the stages are stubbed)."""
import pytest
from absl import app
from absl import flags
from absl.testing import flagsaver

from experiments import run_all
from experiments import stages


@pytest.fixture
def parsed_flags():
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def test_one_method_prints_the_table_then_the_report(
    parsed_flags, monkeypatch, capsys, tmp_path):
  monkeypatch.setattr(run_all, "run_method",
                      lambda method, workdir, **_: f"| {method} table |")
  with flagsaver.flagsaver(workdir=str(tmp_path), method=["flip"]):
    run_all.main(["run_all"])
  out = capsys.readouterr().out.rstrip().splitlines()
  assert out[-2:] == ["| flip table |", f"report: {tmp_path}/report.md"]


def test_several_methods_print_each_report_and_the_comparison(
    parsed_flags, monkeypatch, capsys, tmp_path):
  monkeypatch.setattr(run_all, "run_method",
                      lambda method, workdir, **_: f"| {method} table |")
  monkeypatch.setattr(stages, "write_comparison",
                      lambda workdir, methods: "| comparison |")
  with flagsaver.flagsaver(workdir=str(tmp_path),
                           method=["flip", "clickprompt"]):
    run_all.main(["run_all"])
  out = capsys.readouterr().out.rstrip().splitlines()
  assert out == ["## flip", "| flip table |",
                 f"report: {tmp_path}/flip/report.md",
                 "## clickprompt", "| clickprompt table |",
                 f"report: {tmp_path}/clickprompt/report.md",
                 "| comparison |", f"comparison: {tmp_path}/comparison.md"]


@pytest.mark.parametrize("preset,methods,why", [
    # A preset one of the methods lacks.
    ("cpu-full", ["flip", "srp4ctr"], r"--preset cpu-full: --method=srp4ctr "
     r"has the presets tiny, cpu-small, full"),
    # A method run_all does not know (after a known one).
    ("tiny", ["flip", "bogus"], r"--method 'bogus': expected one of flip, "
     r"clickprompt, srp4ctr"),
], ids=["preset", "method"])
def test_a_bad_method_or_preset_is_refused_before_any_method_runs(
    preset, methods, why, parsed_flags, monkeypatch, tmp_path):
  ran = []
  monkeypatch.setattr(run_all, "run_method",
                      lambda method, workdir, **_: ran.append(method))
  with flagsaver.flagsaver(workdir=str(tmp_path), preset=preset,
                           method=methods):
    with pytest.raises(app.UsageError, match=why):
      run_all.main(["run_all"])
  assert not ran
