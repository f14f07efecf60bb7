"""Export a PLM to an HF/PyTorch checkpoint folder, optionally checking parity.

Round trip of an imported checkpoint (unchanged weights):

  python -m experiments.export_torch --plm=minilm-l6 --out=runs/minilm_hf --check
  python -m experiments.export_torch --plm=/path/to/hf_folder --out=runs/plm_hf \
      --num_layers=4 --check

A finished run of any method (its best checkpoint: FLIP id / plm / joint,
the ID model from scratch, CTR-BERT, ClickPrompt, SRP4CTR and DIN) to a
PyTorch folder, through `flip_jax.methods.run_export` (the run reloaded by
`flip_jax.train.reload.load_run`, as `predict` does):

  python -m experiments.export_torch --workdir=runs/ft_joint \
      --out=runs/ft_joint_torch --check

With `--workdir`, `--check` reloads the export in PyTorch (e.g.
`FlipCtrTorch.from_pretrained` for FLIP and the ID model), scores
`--num_rows` rows of the run's test split and fails if any probability
differs from Flax's by more than 1e-5.

With `--plm`, `--check` reloads the folder with `transformers.AutoModel` and
`AutoModelForMaskedLM`, requires clean loading (no missing weights), and prints
the max abs difference of last hidden states (and MLM logits) between our
encoder and PyTorch on a padded batch.

`export_plm(config, params, tokenizer, out, ...)` is the library entry point
(e.g. for exporting trained runs from a workdir).

`--out` must be a new path, an empty folder or an earlier export (it holds
`flip_jax_export.json`, written into every export with the list of its
files); a file, a folder of other files, an earlier export to which files
were added (they are named: move them out first), the run's `--workdir` (or
a folder inside it) and the `--plm` folder are refused before anything is
loaded. Errors print one line
(`error: ...`, exit 1); `--verbosity=1` adds the traceback.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any

from absl import app
from absl import flags
from absl import logging
import numpy as np

from experiments import launch

from flip_jax.export import hf_export
from flip_jax.models import plm

_PLM = launch.flag(flags.DEFINE_string, "plm", None,
                   "Short PLM name or HF folder.")
_OUT = launch.flag(flags.DEFINE_string, "out", None, "Destination folder.")
_NUM_LAYERS = launch.flag(flags.DEFINE_integer, "num_layers", None,
                          "Keep only the first N layers (default: all).")
_CHECK = launch.flag(flags.DEFINE_bool, "check", False,
                     "Reload with transformers and report the max abs diff.")
_CHECK_BATCH = launch.flag(flags.DEFINE_integer, "check_batch", 4,
                           "Batch size of --check.")
_WORKDIR = launch.flag(flags.DEFINE_string, "workdir", None,
                       "A finetuning run to export (instead of --plm).")
_NUM_ROWS = launch.flag(flags.DEFINE_integer, "num_rows", 256,
                        "Test rows scored by --check with --workdir.")

_CHECK_SENTENCES = (
    "User ID is 1. Gender is female. Age is under 18. Job is K-12 student.",
    "Movie ID is 1193. Title is One Flew Over the Cuckoo's Nest (1975).",
    "Film genre is Drama.",
    "Zipcode is 48067.",
)


def export_plm(config: plm.PLMConfig, params, tokenizer, out, *,
               mlm_head_params=None, pooler=None) -> pathlib.Path:
  """Exports encoder params (+ head) with the tokenizer to `out`.

  Args:
    config: encoder config.
    params: PLMEncoder params.
    tokenizer: HF tokenizer or None.
    out: destination folder.
    mlm_head_params: trained MLMHead params, or None for a fresh head.
    pooler: HF pooler tensors to keep, or None for a fresh one.

  Returns:
    The written folder.
  """
  return hf_export.export_hf(config, params, out, tokenizer=tokenizer,
                             mlm_head_params=mlm_head_params, pooler=pooler)


def make_check_batch(config: plm.PLMConfig, tokenizer, batch: int,
                     seed: int = 0) -> dict[str, np.ndarray]:
  """A right-padded batch: tokenised sentences, or random ids if no tokenizer.

  Row lengths differ so padding is exercised.
  """
  if tokenizer is not None:
    texts = [_CHECK_SENTENCES[i % len(_CHECK_SENTENCES)] for i in range(batch)]
    enc = tokenizer(texts, padding=True, return_tensors="np")
    return {"input_ids": enc["input_ids"].astype(np.int64),
            "attention_mask": enc["attention_mask"].astype(np.int64)}
  rng = np.random.default_rng(seed)
  length = 12
  ids = rng.integers(3, config.vocab_size, (batch, length))
  lens = np.maximum(length - 3 * np.arange(batch) % length, 2)
  mask = (np.arange(length)[None] < lens[:, None]).astype(np.int64)
  ids = np.where(mask == 1, ids, config.pad_token_id)
  return {"input_ids": ids, "attention_mask": mask}


def check_export(folder, config: plm.PLMConfig, params, batch, *,
                 mlm_head_params=None) -> dict[str, Any]:
  """Loads `folder` with transformers and compares with our forward pass.

  Args:
    folder: exported checkpoint.
    config: encoder config.
    params: the exported PLMEncoder params.
    batch: {'input_ids', 'attention_mask'} numpy [B, L].
    mlm_head_params: head params that were exported (None = the fresh head).

  Returns:
    {'hidden_max_abs_diff', 'logits_max_abs_diff', 'missing', 'unexpected'}.
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  if mlm_head_params is None:
    mlm_head_params = hf_export.fresh_head_params(config)
  ours = plm.PLMForMaskedLM(config).apply(
      {"params": {"encoder": params, "mlm_head": mlm_head_params}},
      jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"]))
  mask = batch["attention_mask"][..., None]
  tb = {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()}
  out = {"missing": [], "unexpected": []}
  with torch.no_grad():
    base, info = transformers.AutoModel.from_pretrained(
        str(folder), output_loading_info=True)
    out["missing"] += list(info["missing_keys"])
    hidden = base.eval()(**tb).last_hidden_state.numpy()
    mlm, info = transformers.AutoModelForMaskedLM.from_pretrained(
        str(folder), output_loading_info=True)
    out["missing"] += list(info["missing_keys"])
    out["unexpected"] += list(info["unexpected_keys"])
    logits = mlm.eval()(**tb).logits.numpy()
  # Padded positions are excluded: their states are not defined the same way.
  out["hidden_max_abs_diff"] = float(np.max(
      np.abs(hidden - np.asarray(ours["last_hidden_state"])) * mask))
  out["logits_max_abs_diff"] = float(np.max(
      np.abs(logits - np.asarray(ours["logits"])) * mask))
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if _WORKDIR.value:
    if _PLM.value or not _OUT.value:
      raise app.UsageError("--workdir needs --out and excludes --plm")
    # pylint: disable=g-import-not-at-top
    from flip_jax.methods import run_export
    from flip_jax.train import finished
    # pylint: enable=g-import-not-at-top
    # Before anything is loaded: --out must be new, empty or an earlier
    # export, and not the run's workdir (hf_export.check_destination);
    # --workdir a finished run (else one line saying what it is) of a task
    # with an exporter.
    run_export.check_destination(_OUT.value, _WORKDIR.value)
    run_export.exporter(finished.require(_WORKDIR.value)["task"])
    diff = run_export.export_run(_WORKDIR.value, _OUT.value,
                                 check=_CHECK.value, num_rows=_NUM_ROWS.value)
    print(f"exported finetuned model of {_WORKDIR.value} to {_OUT.value}"
          + (f"; check max |p_torch - p_flax| {diff:.3e}" if _CHECK.value
             else ""))
    return
  if not _PLM.value or not _OUT.value:
    raise app.UsageError("--plm and --out are required (or --workdir and "
                         "--out)")
  source = os.path.expanduser(_PLM.value)
  hf_export.check_destination(
      _OUT.value, protect={"the --plm folder": source if os.path.isdir(
          source) else None})
  module, params, tokenizer, report = plm.load_pretrained(
      _PLM.value, num_layers=_NUM_LAYERS.value, with_mlm_head=True,
      return_report=True)
  logging.info("import: %s", report)
  config = module.config
  # A checkpoint without a head got a fresh, seeded one at import; exporting
  # it keeps masked-LM loading clean (hf_export documents this).
  head = params["mlm_head"]
  folder = export_plm(config, params["encoder"], tokenizer, _OUT.value,
                      mlm_head_params=head, pooler=report.pooler)
  print(f"exported {config.model_type} ({config.num_layers} layers,"
        f" H={config.hidden_size}) to {folder}")
  if _CHECK.value:
    batch = make_check_batch(config, tokenizer, _CHECK_BATCH.value)
    res = check_export(folder, config, params["encoder"], batch,
                       mlm_head_params=head)
    print(f"check: batch {batch['input_ids'].shape}, last_hidden_state max abs"
          f" diff {res['hidden_max_abs_diff']:.3e}, MLM logits max abs diff"
          f" {res['logits_max_abs_diff']:.3e}, missing {res['missing']},"
          f" unexpected {res['unexpected']}")
    if res["missing"] or res["hidden_max_abs_diff"] > 1e-3:
      raise SystemExit("check FAILED")


if __name__ == "__main__":
  launch.run_main(main)
