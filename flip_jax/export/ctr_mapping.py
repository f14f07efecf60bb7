"""One declarative table between Flax CTR variables and torch state dicts.

Rows are (flax path pattern, torch key pattern, hook). A flax path starts
with its variable collection (``params/`` or ``batch_stats/``) followed by
the path inside the backbone (`flip_jax.models.ctr`); the torch key is the
state-dict key of the matching `flip_jax.export.ctr_torch` module. Index
placeholders are filled from the `CTRConfig`:

  {i}  DNN layer         (len(dnn_hidden))
  {l}  cross layer       (cross_layers)
  {a}  AutoInt layer     (att_layers)
  {c}  CIN layer         (len(cin_layers))

Both directions are derived from the same rows: `hook.to_torch(a, cfg)` maps
a Flax array to the torch layout and `hook.to_flax(a, cfg)` inverts it
exactly (pure transposes / reshapes), so export followed by import is
bit-identical. The hook type is `flip_jax.layout_hooks.Hook`, shared with
the PLM table (`flip_jax.models.plm.hf_names`); CTR hooks need no config
and are called with ``cfg=None``.

Hooks:
  identity   tables, biases, raw parameter matrices, BatchNorm tensors
  transpose  Dense kernel (in, out) <-> torch Linear weight (out, in)
  conv1d     CIN kernel (in, out) <-> torch Conv1d weight (out, in, 1)

The finetuned model (`flip_jax.methods.flip.finetune_model.FlipCtrModel`) adds
the rows of `FINETUNE_ROWS` and nests the backbone under ``params/ctr/`` <->
``ctr.``; its PLM goes to a Hugging Face folder (`flip_jax.export.hf_export`)
instead.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from flip_jax.layout_hooks import Hook
from flip_jax.layout_hooks import IDENTITY
from flip_jax.layout_hooks import TRANSPOSE
# Also importable as ctr_mapping.flatten / unflatten (tests use them).
from flip_jax.tree_paths import flatten
from flip_jax.tree_paths import unflatten

Array = np.ndarray
Row = tuple[str, str, str]


# The hooks ignore the config (`cfg=None`): CTR layouts depend on no size.
HOOKS: dict[str, Hook] = {
    "identity": IDENTITY,
    "transpose": TRANSPOSE,
    "conv1d": Hook("conv1d", lambda a, cfg=None: a.T[:, :, None],
                   lambda a, cfg=None: a[:, :, 0].T),
}

_BN = (("scale", "params", "weight"), ("bias", "params", "bias"),
       ("mean", "batch_stats", "running_mean"),
       ("var", "batch_stats", "running_var"))


def _dense(flax: str, torch: str, bias: bool = True) -> tuple[Row, ...]:
  rows = ((f"params/{flax}/kernel", f"{torch}.weight", "transpose"),)
  if bias:
    rows += ((f"params/{flax}/bias", f"{torch}.bias", "identity"),)
  return rows


def _batch_norm(flax: str, torch: str) -> tuple[Row, ...]:
  return tuple((f"{col}/{flax}/{f}", f"{torch}.{t}", "identity")
               for f, col, t in _BN)


def _raw(flax: str, torch: str, hook: str = "identity") -> Row:
  return (f"params/{flax}", torch, hook)


# Row groups; `groups_for` picks the ones a config uses.
GROUPS: dict[str, tuple[Row, ...]] = {
    "embedding": (_raw("embedding/table", "embedding.weight"),),
    "linear": (_raw("linear/table", "linear.weight"),),
    "head": _dense("head", "head", bias=False),
    "dnn": _dense("dnn/dense_{i}", "dnn.linears.{i}"),
    "dnn_bn": _batch_norm("dnn/bn_{i}", "dnn.norms.{i}"),
    "cross_mix": (
        _raw("cross/gates", "cross.gates.weight", "transpose"),
        _raw("cross/U_{l}", "cross.U.{l}"),
        _raw("cross/V_{l}", "cross.V.{l}"),
        _raw("cross/C_{l}", "cross.C.{l}"),
        _raw("cross/bias_{l}", "cross.bias.{l}"),
    ),
    "cross_full": (
        _raw("cross/kernel_{l}", "cross.linears.{l}.weight", "transpose"),
        _raw("cross/bias_{l}", "cross.bias.{l}"),
    ),
    "cross_vector": (
        _raw("cross/kernel_{l}", "cross.kernels.{l}"),
        _raw("cross/bias_{l}", "cross.bias.{l}"),
    ),
    "autoint": tuple(_raw(f"att_{{a}}/W_{n}", f"att.{{a}}.W_{n}")
                     for n in ("query", "key", "value")),
    "autoint_res": (_raw("att_{a}/W_res", "att.{a}.W_res"),),
    "cin": (_raw("cin/kernel_{c}", "cin.convs.{c}.weight", "conv1d"),
            _raw("cin/bias_{c}", "cin.convs.{c}.bias")),
    "afm": (_raw("attention/W", "attention.W"), _raw("attention/b",
                                                     "attention.b"),
            _raw("attention/h", "attention.h")),
    "afn": (_raw("ltl/weights", "ltl.weights"),
            _raw("ltl/biases", "ltl.biases")),
    "afn_bn": (*_batch_norm("ltl/bn_0", "ltl.bn_0"),
               *_batch_norm("ltl/bn_1", "ltl.bn_1")),
}

# Backbone name -> the groups it always uses (see `groups_for` for the
# config-dependent ones: cross type, BatchNorm, AutoInt residual).
MODEL_GROUPS: dict[str, tuple[str, ...]] = {
    "dcnv2": ("embedding", "linear", "head", "dnn"),
    "dcnv2_full": ("embedding", "linear", "head", "dnn", "cross_full"),
    "dcn": ("embedding", "linear", "head", "dnn", "cross_vector"),
    "deepfm": ("embedding", "linear", "head", "dnn"),
    "fm": ("embedding", "linear"),
    "afm": ("embedding", "linear", "head", "afm"),
    "autoint": ("embedding", "linear", "head", "dnn", "autoint"),
    "dnn": ("embedding", "head", "dnn"),
    "widedeep": ("embedding", "linear", "head", "dnn"),
    "pnn": ("embedding", "head", "dnn"),
    "xdeepfm": ("embedding", "linear", "head", "dnn", "cin"),
    "afn": ("embedding", "linear", "head", "dnn", "afn"),
}

# Rows of the finetuning heads (FlipCtrModel), per mode; scalars are 0-d.
FINETUNE_ROWS: dict[str, tuple[Row, ...]] = {
    "id": (_raw("ctr_bias", "ctr_bias"),),
    "plm": _dense("txt_head", "txt_head"),
    "joint": (_raw("ctr_bias", "ctr_bias"), *_dense("txt_head", "txt_head"),
              _raw("alpha", "alpha"), _raw("out_bias", "out_bias")),
}

# Torch buffers with no Flax counterpart: written as 0 on export, ignored on
# import.
TORCH_ONLY = re.compile(r"(^|\.)num_batches_tracked$")


def groups_for(cfg) -> tuple[str, ...]:
  """The row groups of backbone `cfg` (a `CTRConfig`).

  Raises:
    ValueError: an unknown backbone name.
  """
  if cfg.name not in MODEL_GROUPS:
    raise ValueError(f"ctr_mapping: no torch mapping for backbone "
                     f"{cfg.name!r}; known: {sorted(MODEL_GROUPS)}")
  groups = MODEL_GROUPS[cfg.name]
  if cfg.name == "dcnv2":
    groups += ("cross_mix" if cfg.cross_type == "mix" else "cross_full",)
  if cfg.name == "autoint" and cfg.att_res:
    groups += ("autoint_res",)
  if cfg.name == "afn" and cfg.afn_use_bn:
    groups += ("afn_bn",)
  if "dnn" in groups and cfg.dnn_use_bn:
    groups += ("dnn_bn",)
  return groups


def _expand(rows, counts: Mapping[str, int]) -> list[tuple[str, str, Hook]]:
  out = [(f, t, HOOKS[h]) for f, t, h in rows]
  for var, n in counts.items():
    done = []
    for f, t, h in out:
      if "{" + var + "}" in f:
        done += [(f.replace("{" + var + "}", str(k)),
                  t.replace("{" + var + "}", str(k)), h) for k in range(n)]
      else:
        done.append((f, t, h))
    out = done
  return out


def backbone_rows(cfg) -> list[tuple[str, str, Hook]]:
  """Expanded (flax path, torch key, hook) rows of backbone `cfg`."""
  counts = {"i": len(cfg.dnn_hidden), "l": cfg.cross_layers,
            "a": cfg.att_layers, "c": len(cfg.cin_layers)}
  rows = [r for g in groups_for(cfg) for r in GROUPS[g]]
  return _expand(rows, counts)


def finetune_rows(mode: str, cfg=None) -> list[tuple[str, str, Hook]]:
  """Rows of a finetuned model without its PLM: heads (+ backbone).

  Args:
    mode: 'id', 'plm' or 'joint'.
    cfg: the backbone `CTRConfig` (required unless mode is 'plm').

  Returns:
    Expanded rows; backbone paths become ``params/ctr/...`` <-> ``ctr.``.
  """
  if mode not in FINETUNE_ROWS:
    raise ValueError(f"ctr_mapping: unknown finetune mode {mode!r}; known: "
                     f"{sorted(FINETUNE_ROWS)}")
  rows = _expand(FINETUNE_ROWS[mode], {})
  if mode != "plm":
    if cfg is None:
      raise ValueError(f"ctr_mapping: mode {mode!r} needs a CTRConfig")
    for f, t, h in backbone_rows(cfg):
      col, rest = f.split("/", 1)
      rows.append((f"{col}/ctr/{rest}", f"ctr.{t}", h))
  return rows


def _host(v) -> Array:
  """Any array (jax, boxed, bf16) -> numpy, floats upcast to float32."""
  v = getattr(v, "value", v)            # flax LogicallyPartitioned box
  a = np.asarray(v)
  if a.dtype.kind == "f" or a.dtype.name == "bfloat16":
    a = a.astype(np.float32)
  return a


def to_torch(rows, variables: Mapping[str, Any], *,
             ignore: str | None = None) -> dict[str, Array]:
  """Flax variables -> torch state dict (contiguous numpy arrays).

  Args:
    rows: expanded rows (`backbone_rows` or `finetune_rows`).
    variables: {'params': ..., ['batch_stats': ...]} nested dicts.
    ignore: regex of flax paths deliberately left out (e.g. '^params/plm/').

  Returns:
    {torch key: array}; BatchNorm counters ``num_batches_tracked`` are 0.

  Raises:
    KeyError: a row's flax path is missing, or a variable has no row.
  """
  flat = {k: v for k, v in flatten(variables).items()
          if not (ignore and re.search(ignore, k))}
  wanted = {f for f, _, _ in rows}
  missing = sorted(wanted - set(flat))
  extra = sorted(set(flat) - wanted)
  if missing:
    raise KeyError(f"ctr_mapping.to_torch: variables lack {missing[:8]}")
  if extra:
    raise KeyError(f"ctr_mapping.to_torch: variables without a mapping row "
                   f"{extra[:8]}")
  out = {}
  for f, t, hook in rows:
    # np.require keeps 0-d scalars 0-d (ascontiguousarray would not).
    out[t] = np.require(hook.to_torch(_host(flat[f]), None),
                        requirements="C")
    if t.endswith(".running_mean"):
      out[t[:-len("running_mean")] + "num_batches_tracked"] = np.zeros(
          (), np.int64)
  return out


def to_flax(rows, state_dict: Mapping[str, Any], *,
            ignore: str | None = None) -> dict[str, Any]:
  """Torch state dict -> nested Flax variables (the exact inverse).

  Args:
    rows: expanded rows (`backbone_rows` or `finetune_rows`).
    state_dict: {torch key: numpy array or torch tensor}.
    ignore: regex of torch keys deliberately left out (e.g. '^plm\\.').

  Returns:
    {'params': ..., ['batch_stats': ...]} with numpy leaves.

  Raises:
    KeyError: a row's torch key is missing, or a key has no row.
  """
  sd = {k: v for k, v in state_dict.items()
        if not TORCH_ONLY.search(k) and not (ignore and re.search(ignore, k))}
  wanted = {t for _, t, _ in rows}
  missing = sorted(wanted - set(sd))
  extra = sorted(set(sd) - wanted)
  if missing:
    raise KeyError(f"ctr_mapping.to_flax: state dict lacks {missing[:8]}")
  if extra:
    raise KeyError(f"ctr_mapping.to_flax: state-dict keys without a mapping "
                   f"row {extra[:8]}")
  flat = {}
  for f, t, hook in rows:
    v = sd[t]
    if hasattr(v, "detach"):            # a torch tensor
      v = v.detach().cpu().numpy()
    flat[f] = np.require(hook.to_flax(np.asarray(v), None),
                         requirements="C")
  return unflatten(flat)
