"""comparison.md: every method's models, mean ± std where seeds were run."""
import json

from experiments import stages


def _summary(path, values):
  per = {k: {"mean": sum(v) / len(v), "std": 0.5 * (max(v) - min(v)),
             "values": v} for k, v in values.items()}
  path.mkdir(parents=True)
  (path / "summary.json").write_text(json.dumps({"models": {
      "M": dict({k: p["mean"] for k, p in per.items()}, per_seed=per)}}))


def test_comparison_shows_seeds_mean_and_std(tmp_path):
  _summary(tmp_path / "a", {"test/auc": [0.70, 0.72],
                            "test/gauc": [0.60, 0.62],
                            "test/logloss": [0.50, 0.52]})
  _summary(tmp_path / "b", {"test/auc": [0.75], "test/gauc": [0.65],
                            "test/logloss": [0.55]})
  table = stages.write_comparison(str(tmp_path), ["a", "b"])
  rows = table.splitlines()
  assert rows[2] == ("| a | M | 2 | 0.7100 ± 0.0100 | 0.6100 ± 0.0100 | "
                     "0.5100 ± 0.0100 |")
  assert rows[3] == "| b | M | 1 | 0.7500 | 0.6500 | 0.5500 |"
  assert table in (tmp_path / "comparison.md").read_text()
