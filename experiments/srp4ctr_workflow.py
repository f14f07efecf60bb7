"""SRP4CTR's end-to-end workflow (``run_all --method=srp4ctr``).

Stages (each resumable and skipped once done; wall time and device in
``stages.json``; the stage runner ``experiments.stages``):

  prepare         data + sequence statistics, the samples parquet  data/
  pretrain        FG-BERT on the train histories                  pretrain/
  pretrain_id     ID-only BERT4Rec-style pretraining              pretrain_id/
  backbone        the CTR backbone without sequence knowledge     backbone/
  din             DIN's target attention over the raw history     din/
  srp4ctr         SRP4CTR, FG-BERT finetuned                      srp4ctr/
  srp4ctr_frozen  SRP4CTR, FG-BERT frozen                         srp4ctr_frozen/
  no_cross        without the uni cross-attention                 no_cross/
  no_queries      without the querying transformer                no_queries/
  bert4rec        SRP4CTR on the ID-only pretraining              bert4rec/
  flops           FLOPs per candidate and candidates/s            flops.json
  export          SRP4CTR to PyTorch, parity checked              export_srp4ctr/

Overrides (``--set``) as in FLIP's workflow: ``pretrain:`` scopes a key to
the pretraining stages, ``finetune:`` to the CTR stages. With several seeds
each seed's training stages go to ``seed<N>/`` (data prepared once, FLOPs
measured once). The report (``results.md``, ``report.md`` / ``.html`` with
plots, ``summary.json``) states spec B8's claims as holds / contradicted /
not supported at N % of the official budget (``report.verdict``).
"""
from __future__ import annotations

import os

import jax
import numpy as np

from experiments import report
from experiments import report_plots
from experiments import run_identity
from experiments import stages as stages_lib
from experiments.configs import srp4ctr_common
from flip_jax import jsonio

# The presets the method has (run_all's --preset).
PRESETS = srp4ctr_common.PRESETS
STAGES = ("prepare", "pretrain", "pretrain_id", "backbone", "din", "srp4ctr",
          "srp4ctr_frozen", "no_cross", "no_queries", "bert4rec", "flops",
          "export")
# Pretraining stages: their token attributes ('fg' or 'id').
PRETRAIN_STAGES = {"pretrain": "fg", "pretrain_id": "id"}
# CTR stages: (config variant, frozen encoder, pretraining stage or None).
CTR_STAGES = {
    "backbone": ("backbone", False, None), "din": ("din", False, None),
    "srp4ctr": ("srp4ctr", False, "pretrain"),
    "srp4ctr_frozen": ("srp4ctr", True, "pretrain"),
    "no_cross": ("no_cross", False, "pretrain"),
    "no_queries": ("no_queries", False, "pretrain"),
    "bert4rec": ("srp4ctr", False, "pretrain_id"),
}
ROWS = (("backbone", "Backbone alone (no sequence)"),
        ("din", "DIN (target attention)"),
        ("srp4ctr", "SRP4CTR (FG-BERT finetuned)"),
        ("srp4ctr_frozen", "SRP4CTR (FG-BERT frozen)"),
        ("no_cross", "SRP4CTR without cross-attention"),
        ("no_queries", "SRP4CTR without queries"),
        ("bert4rec", "SRP4CTR on ID-only BERT4Rec pretraining"))
# Spec B8 (and B5's DIN comparison): (better row, worse row, claim).
CLAIMS = (
    ("srp4ctr", "backbone", "SRP4CTR beats the same backbone without "
     "sequence knowledge (B8, must)"),
    ("srp4ctr", "din", "SRP4CTR beats DIN (B5)"),
    ("srp4ctr", "bert4rec", "FG-BERT beats ID-only BERT pretraining (B8)"),
    ("srp4ctr", "no_cross", "the uni cross-attention helps on its own (B8)"),
    ("srp4ctr", "no_queries", "the querying transformer helps on its own "
     "(B8)"),
)
# "Far less": SRP4CTR's extra inference-FLOPs per candidate over DIN's are
# at most this fraction of its extra efficiency-FLOPs [flip_jax].
FAR_LESS = 0.5


def pretrain_config(dataset, data_dir, cache_dir, preset, seed, attributes,
                    overrides):
  from experiments.configs import srp4ctr_pretrain  # pylint: disable=g-import-not-at-top
  cfg = srp4ctr_pretrain.get_config(
      f"dataset={dataset},preset={preset},attributes={attributes}")
  return stages_lib.stage_config(cfg, "pretrain", data_dir=data_dir,
                                 cache_dir=cache_dir, seed=seed,
                                 overrides=overrides)


def ctr_config(dataset, data_dir, cache_dir, preset, ctr, seed, stage,
               pretrained, overrides):
  from experiments.configs import srp4ctr_ctr  # pylint: disable=g-import-not-at-top
  variant, freeze, _ = CTR_STAGES[stage]
  cfg = srp4ctr_ctr.get_config(
      f"dataset={dataset},preset={preset},ctr={ctr},variant={variant},"
      f"freeze={freeze}")
  cfg.srp4ctr.pretrained = pretrained
  return stages_lib.stage_config(cfg, "finetune", data_dir=data_dir,
                                 cache_dir=cache_dir, seed=seed,
                                 overrides=overrides)


def run_all(*, dataset: str, data_dir: str, workdir: str, preset: str,
            plm: str, ctr: str, seed: int, stages=None,
            overrides: dict[str, str] | None = None,
            seeds: list[int] | None = None) -> str:
  """Runs the selected stages; returns the results table and claims.

  ``plm`` is part of the workflow contract; SRP4CTR reads no text.
  """
  del plm
  overrides = overrides or {}
  stages, seeds = stages_lib.run_args(stages, STAGES, STAGES, seeds, seed)
  os.makedirs(workdir, exist_ok=True)
  args = dict(dataset=dataset, data_dir=data_dir, preset=preset)
  stages_lib.check_overrides(overrides, [
      pretrain_config(**args, cache_dir="", seed=seeds[0], attributes="fg",
                      overrides={}),
      ctr_config(**args, cache_dir="", ctr=ctr, seed=seeds[0],
                 stage="srp4ctr", pretrained="", overrides={})])
  run_identity.claim(workdir, "srp4ctr", locals())  # before any stage
  cache_dir = os.path.join(workdir, ".flip_jax_cache")
  args.update(cache_dir=cache_dir)
  log = stages_lib.StageLog(workdir)
  if "prepare" in stages:
    log.run("prepare", lambda: os.path.exists(
        os.path.join(workdir, "data", "sequences.json")),
            lambda: _prepare(workdir, ctr_config(
                **args, ctr=ctr, seed=seeds[0], stage="srp4ctr",
                pretrained="", overrides=overrides)))
  for s, folder in stages_lib.seed_folders(workdir, seeds):
    _run_seed(folder, stages, s, args, ctr, overrides)
  if "flops" in stages:
    out = os.path.join(workdir, "flops.json")
    configs = {k: ctr_config(**args, ctr=ctr, seed=seeds[0], stage=k,
                             pretrained="", overrides=overrides)
               for k in ("srp4ctr", "din", "backbone")}
    log.run("flops", lambda: os.path.exists(out),
            lambda: _flops(workdir, out, configs))
  return write_report(workdir, dataset=dataset, preset=preset)


def _run_seed(folder, stages, seed, args, ctr, overrides) -> None:
  os.makedirs(folder, exist_ok=True)
  log = stages_lib.StageLog(folder)
  for name, attributes in PRETRAIN_STAGES.items():
    if name in stages:
      stages_lib.pretrain(log, name, pretrain_config(
          **args, seed=seed, attributes=attributes, overrides=overrides),
                          os.path.join(folder, name))
  for name, (_, _, pre) in CTR_STAGES.items():
    if name in stages:
      stages_lib.train(log, name, ctr_config(
          **args, ctr=ctr, seed=seed, stage=name,
          pretrained=os.path.join(folder, pre) if pre else "",
          overrides=overrides), os.path.join(folder, name))
  if "export" in stages:
    stages_lib.export(log, "export", os.path.join(folder, "srp4ctr"),
                      os.path.join(folder, "export_srp4ctr"))


def _prepare(workdir, cfg) -> dict:
  """Data and sequence statistics; the samples parquet for inspection."""
  # pylint: disable=g-import-not-at-top
  from flip_jax.data import sequence_samples
  from flip_jax.data import sequences
  from flip_jax.methods.srp4ctr import data as data_lib
  # pylint: enable=g-import-not-at-top
  out = os.path.join(workdir, "data")
  os.makedirs(out, exist_ok=True)
  prepared, store = data_lib.load_store(cfg, workdir)
  stats = {"tie_rule": sequences.TIE_RULE, "users": store.num_users,
           "events": int(len(store.tokens)),
           "attributes": list(store.attributes),
           "vocab_sizes": store.vocab_sizes.tolist()}
  for split, cols in store.splits.items():
    n = cols["hist_end"] - cols["hist_begin"]
    stats[split] = {"rows": int(len(n)), "mean_history": float(n.mean()),
                    "median_history": float(np.median(n)),
                    "empty_history": float((n == 0).mean()),
                    f"at_least_{cfg.sequence.max_length}": float(
                        (n >= cfg.sequence.max_length).mean())}
  if jax.process_index() == 0:
    prepared.feature_map.save(os.path.join(out, "feature_map.json"))
    jsonio.write_json_atomic(os.path.join(out, "stats.json"), prepared.stats)
    sequence_samples.write_samples(
        prepared, sequences.SequenceSpec(cfg.sequence.user_field,
                                         cfg.sequence.item_field, ("item",)),
        os.path.join(out, "sequences.parquet"), cfg.sequence.max_length)
    jsonio.write_json_atomic(os.path.join(out, "sequences.json"), stats)
  return stats


def _flops(workdir, out, configs) -> dict:
  """`flip_jax.methods.srp4ctr.flops` of the run's models on its data."""
  # pylint: disable=g-import-not-at-top
  from flip_jax.methods.srp4ctr import data as data_lib
  from flip_jax.methods.srp4ctr import finetune
  from flip_jax.methods.srp4ctr import flops
  # pylint: enable=g-import-not-at-top
  models = {}
  for name, cfg in configs.items():
    cfg = finetune.resolve_config(cfg)
    prepared, store = data_lib.load_store(cfg, workdir)
    models[name] = finetune.build_model(cfg, store,
                                        prepared.feature_map).config
  res = flops.run(models)
  if jax.process_index() == 0:
    jsonio.write_json_atomic(out, res)
  return res


# ------------------------------------------------------------------ report
def flops_verdict(flops: dict | None) -> dict | None:
  """B8: inference-FLOPs per candidate grow far less than efficiency-FLOPs
  (both relative to DIN)."""
  if not flops or "srp4ctr" not in flops or "din" not in flops:
    return None
  s, d = flops["srp4ctr"], flops["din"]
  eff = s["efficiency_flops"] / d["efficiency_flops"] - 1
  inf = (s["inference_flops_per_candidate"]
         / d["inference_flops_per_candidate"] - 1)
  holds = bool(inf <= FAR_LESS * eff) if eff > 0 else False
  return {"claim": "inference-FLOPs per candidate grow far less than "
                   "efficiency-FLOPs (vs DIN, B8)", "holds": holds,
          # A count, not a trained quantity: no budget to wait for.
          "verdict": "holds" if holds else "contradicted",
          "efficiency_flops_growth": eff, "inference_flops_growth": inf}


def _plots(workdir: str) -> list[tuple[str, str]]:
  first, made = report.seed_dirs(workdir)[0][1], []
  pre = os.path.join(first, "pretrain")
  report_plots.curve(workdir, "pretrain_losses.png",
                     "FG-BERT pretraining losses", "loss",
                     [(k, report_plots.points(pre, k))
                      for k in ("train/loss", "train/item_loss")], made)
  report_plots.curve(workdir, "valid_auc.png", "Validation AUC per model",
                     "valid AUC", [(n, report_plots.points(
                         os.path.join(first, k), "valid/auc"))
                                   for k, n in ROWS], made)
  return made


def write_report(workdir: str, *, dataset: str = "", preset: str = "") -> str:
  """results.md, report.md / .html, summary.json; returns the table."""
  table, rows = report.results_table(workdir, ROWS, base="backbone")
  flops = report.read_json(os.path.join(workdir, "flops.json"))
  fv = flops_verdict(flops)
  cl = report.claims(rows, CLAIMS)
  if fv is not None:
    cl.append(f"- {fv['claim']}: {fv['verdict']} (efficiency "
              f"{100 * fv['efficiency_flops_growth']:+.0f}%, inference "
              f"{100 * fv['inference_flops_growth']:+.0f}% per candidate)")
  md = [f"# SRP4CTR run report: {dataset or os.path.basename(workdir)}", "",
        f"Preset `{preset}`; selection on validation AUC, test evaluated "
        "once at the selected step.", "", "## Results", "", table, ""]
  if cl:
    md += ["## The paper's claims on this run", ""] + cl + [""]
  if flops:
    md += ["## FLOPs per candidate (1 user x 100 candidates) and batch 1",
           "", "| model | efficiency MFLOP | inference MFLOP/cand | folded "
           "cand/s | unfolded cand/s |", "|---|---|---|---|---|"]
    md += [f"| {k} | {v['efficiency_flops'] / 1e6:.2f} | "
           f"{v['inference_flops_per_candidate'] / 1e6:.3f} | "
           f"{v['folded_candidates_per_sec']:.0f} | "
           f"{v['unfolded_candidates_per_sec']:.0f} |"
           for k, v in flops.items()] + [""]
  check = report.read_json(os.path.join(report.seed_dirs(workdir)[0][1],
                                         "export_srp4ctr", "check.json"))
  if check is not None:
    md += [f"PyTorch export of SRP4CTR: max |p_torch - p_flax| = "
           f"{check['max_abs_diff']:.2e}", ""]
  made = _plots(workdir)
  md += [line for t, f in made for line in (f"## {t}", "", f"![{t}]({f})",
                                             "")]
  text = "\n".join(md)
  summary = report.summary(workdir, rows, CLAIMS)
  if fv is not None:
    summary["claims"].append(fv)
  summary["flops"] = flops
  stages_lib.write_report_files(workdir, table=table, text=text, plots=made,
                                summary=summary)
  return table + ("\n" + "\n".join(cl) if cl else "")
