"""The ID model from scratch (task ``ctr``) to PyTorch: the exporter of the
contract in `flip_jax.methods.run_export`.

`CTRClassifier` computes ``ctr/logit + out_bias``, the same function as
FLIP's id-mode model (``ctr/logit + ctr_bias``), so the run is written as
an id-mode export folder (`flip_jax.methods.flip.export`), loadable with
`flip_jax.export.ctr_torch.FlipCtrTorch.from_pretrained`; BatchNorm
statistics travel with it.
"""
from __future__ import annotations

import jax

from flip_jax.methods.flip import export as flip_export
from flip_jax.methods.flip import finetune_model


def as_id_model(run):
  """(FLIP id-mode FinetuneConfig, variables) of a ``ctr`` run."""
  variables = jax.device_get(dict(run.variables))
  params = dict(variables["params"])
  params["ctr_bias"] = params.pop("out_bias")
  ft_cfg = finetune_model.FinetuneConfig(mode="id", ctr=run.task.model.cfg)
  return ft_cfg, {**variables, "params": params}


def write(run, out_dir, source):
  ft_cfg, variables = as_id_model(run)
  return flip_export.export_model(ft_cfg, variables, out_dir,
                                  feature_map=run.data.feature_map,
                                  source=source)


def compare(folder, run, batch):
  ft_cfg, variables = as_id_model(run)
  return flip_export.compare_export(folder, ft_cfg, variables, batch)
