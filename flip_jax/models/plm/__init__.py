"""BERT/RoBERTa encoders (FLIP's PLM), MLM heads and HF checkpoint import.

  module, params, tokenizer = load_pretrained("minilm-l6", num_layers=4)
  out = module.apply({"params": params}, ids, mask)   # last_hidden_state, cls

  # Encoder + tied MLM head; the ImportReport says whether the head was
  # loaded or freshly initialised (MiniLM ships none).
  mlm, params, tok, report = load_pretrained(
      "minilm-l6", with_mlm_head=True, return_report=True)
  logits = mlm.apply({"params": params}, ids, mask)["logits"]

Imported params are plain arrays; their logical partition specs come from
`jax.eval_shape(module.init, ...)` + `nn.get_partition_spec` as usual.
"""
from flip_jax.models.plm.bert import PLMEncoder
from flip_jax.models.plm.config import ATTENTION_IMPLS
from flip_jax.models.plm.config import DROPOUT_BITS
from flip_jax.models.plm.config import PLMConfig
from flip_jax.models.plm.config import SUPPORTED_MODEL_TYPES
from flip_jax.models.plm.heads import MLMHead
from flip_jax.models.plm.heads import PLMForMaskedLM
from flip_jax.models.plm.hf_import import ImportReport
from flip_jax.models.plm.hf_import import load_pretrained
from flip_jax.models.plm.registry import resolve_path
from flip_jax.models.plm.registry import SHORT_NAMES

__all__ = [
    "ATTENTION_IMPLS", "DROPOUT_BITS", "ImportReport", "MLMHead", "PLMConfig", "PLMEncoder", "PLMForMaskedLM",
    "SHORT_NAMES", "SUPPORTED_MODEL_TYPES", "load_pretrained", "resolve_path",
]
