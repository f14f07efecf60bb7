"""The ClickPrompt model: PA-MLM pretraining and every finetuning mode.

One linen module, ``ClickPromptModel``, whose ``config.mode`` picks the parts
(CLICKPROMPT_SRP4CTR.md A4-A7):

  mode        CTR q  PLM  prompts          CTR logit  PLM logit
  pretrain     yes   yes  fusion (prefix)     -       LM head (PA-MLM;
                                                      fusion 'none': the
                                                      PLM's plain MLM)
  prefix_add   yes   yes  layer prefixes     yes        yes
  prefix       yes   yes  layer prefixes      -         yes
  prompt_add   yes   yes  input prompts      yes        yes
  prompt       yes   yes  input prompts       -         yes
  add          yes   yes  none               yes        yes
  ctr_only     yes    -   none               yes         -
  nlp_only      -    yes  none                -         yes

Param tree: ``ctr/`` (a zoo backbone; only its encoder, q = encode(ids)),
``prompt_generator/``, ``plm/``, ``lm_head/`` + ``lm_decoder`` (pretraining;
the decoder untied unless ``lm_tied``), ``ctr_head`` (Linear(in -> 1) on q,
or on the prompts' mean / concatenation with ``prompt_usage`` avg / cat),
``nlp_head`` (dense -> tanh -> out on the pooled text) and ``alpha``.

Fusion of the two logits (A7): with ``weighted_add``, the paper's
α·ℓ_CTR + (1 − α)·ℓ_PLM (α a parameter from ``alpha_init`` when learnable,
else the constant); without, the code default ℓ_CTR + ℓ_PLM. q is computed
once (the official code computes it twice; equal with dropout 0).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from flip_jax import losses
from flip_jax.methods.clickprompt import prompt as prompt_lib
from flip_jax.models import ctr as ctr_lib
from flip_jax.models import plm as plm_lib
from flip_jax.models.plm import layers as plm_layers

# mode -> (uses q, uses the PLM, prompt kind, CTR logit, PLM logit)
MODES = {
    "pretrain": (True, True, "fusion", False, False),
    "prefix_add": (True, True, "prefix", True, True),
    "prefix": (True, True, "prefix", False, True),
    "prompt_add": (True, True, "prompt", True, True),
    "prompt": (True, True, "prompt", False, True),
    "add": (True, True, None, True, True),
    "ctr_only": (True, False, None, True, False),
    "nlp_only": (False, True, None, False, True),
}
FINETUNE_MODES = tuple(m for m in MODES if m != "pretrain")
PROMPT_USAGES = ("no", "avg", "cat")
FUSIONS = ("prefix", "prompt", "none")


@dataclasses.dataclass(frozen=True)
class ClickPromptConfig:
  """Static configuration (frozen from the ConfigDict at the task)."""
  mode: str
  ctr: Any = None                 # ctr_lib.CTRConfig (modes using q)
  plm: Any = None                 # plm_lib.PLMConfig (modes using the PLM)
  num_prompt: int = 10
  fusion: str = "prefix"          # pretraining's prompts (none: plain MLM)
  prompt_usage: str = "no"
  pooler: str = "cls"
  weighted_add: bool = True
  alpha_learnable: bool = True
  alpha_init: float = 0.5
  shift_positions: bool = True
  lm_tied: bool = False
  mlm_max_masked: int = 16
  dtype: Any = jnp.float32        # PLM / heads compute dtype
  generator_dtype: Any = jnp.float32
  plm_remat: bool = False

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"clickprompt mode {self.mode!r}: expected one of "
                       f"{list(MODES)}")
    uses_q, uses_plm, kind, ctr_logit, _ = MODES[self.mode]
    uses_q = self.uses_q
    if uses_q and self.ctr is None:
      raise ValueError(f"mode {self.mode!r} needs a CTR backbone config")
    if uses_plm and self.plm is None:
      raise ValueError(f"mode {self.mode!r} needs a PLM config")
    if self.fusion not in FUSIONS:
      raise ValueError(f"clickprompt.fusion {self.fusion!r}: {FUSIONS}")
    if self.prompt_usage not in PROMPT_USAGES:
      raise ValueError(f"prompt_usage {self.prompt_usage!r}: {PROMPT_USAGES}")
    if self.prompt_usage != "no" and not (ctr_logit and kind):
      raise ValueError(f"prompt_usage={self.prompt_usage!r} needs prompts "
                       "and a CTR logit (prefix_add or prompt_add)")
    if self.pooler not in prompt_lib.POOLERS:
      raise ValueError(f"pooler {self.pooler!r}: {prompt_lib.POOLERS}")
    if kind and self.num_prompt < 1:
      raise ValueError(f"num_prompt={self.num_prompt}: prompts need K >= 1")

  @property
  def uses_q(self) -> bool:
    """Whether the CTR model runs (not in nlp_only or plain MLM)."""
    return MODES[self.mode][0] and not (self.mode == "pretrain"
                                        and self.fusion == "none")

  @property
  def prompt_kind(self) -> str | None:
    kind = MODES[self.mode][2]
    if kind == "fusion":
      return None if self.fusion == "none" else self.fusion
    return kind

  @property
  def prompt_positions(self) -> int:
    """Position slots the prompts take in front of the text."""
    kind = self.prompt_kind
    if kind == "prompt" or (kind == "prefix" and self.shift_positions):
      return self.num_prompt
    return 0


class ClickPromptModel(nn.Module):
  """See the module docstring; ``__call__`` returns a dict of named outputs."""
  config: ClickPromptConfig

  def setup(self):
    cfg = self.config
    _, uses_plm, _, ctr_logit, plm_logit = MODES[cfg.mode]
    kind = cfg.prompt_kind
    if cfg.uses_q:
      self.ctr = ctr_lib.build(cfg.ctr)
    if uses_plm:
      self.plm = plm_lib.PLMEncoder(cfg.plm, dtype=cfg.dtype,
                                    remat=cfg.plm_remat)
    if kind == "prefix":
      self.prompt_generator = prompt_lib.PrefixGenerator(
          cfg.num_prompt, cfg.plm.num_layers, cfg.plm.num_heads,
          cfg.plm.head_dim, cfg.generator_dtype)
    elif kind == "prompt":
      self.prompt_generator = prompt_lib.InputPromptGenerator(
          cfg.num_prompt, cfg.plm.hidden_size, cfg.generator_dtype)
    if cfg.mode == "pretrain":
      self.lm_head = plm_lib.MLMHead(cfg.plm, dtype=cfg.dtype)
      if not cfg.lm_tied:
        self.lm_decoder = self.param(
            "lm_decoder", plm_layers.normal_init(
                cfg.plm.initializer_range, ("vocab", "embed")),
            (cfg.plm.vocab_size, cfg.plm.hidden_size), jnp.float32)
    if ctr_logit:
      self.ctr_head = prompt_lib.Linear(1, ("hidden_in", None), jnp.float32)
    if plm_logit:
      self.nlp_head = prompt_lib.NlpHead(cfg.plm.hidden_size, cfg.dtype)
    if ctr_logit and plm_logit and cfg.weighted_add and cfg.alpha_learnable:
      self.alpha_param = self.param(
          "alpha", lambda k, s: jnp.full(s, cfg.alpha_init, jnp.float32), ())

  # ------------------------------------------------------------- pieces
  def alpha(self):
    """The mixing weight α of the CTR logit (learned or constant)."""
    if self.config.alpha_learnable:
      return self.alpha_param
    return jnp.asarray(self.config.alpha_init, jnp.float32)

  def _encode_text(self, input_ids, mask, q, *, deterministic, hidden):
    """PLM pass with the mode's prompts; (outputs, pooling mask, prompts)."""
    cfg = self.config
    kind = cfg.prompt_kind
    prompts = None
    kw = dict(deterministic=deterministic, output_hidden_states=hidden)
    if kind == "prefix":
      prompts = self.prompt_generator(q)             # [B, K, 2L, N, D]
      prompts = nn.with_logical_constraint(
          prompts, ("batch", None, None, "heads", "kv"))
      kw.update(prefix=prompt_lib.layer_prefixes(prompts, cfg.dtype),
                position_offset=cfg.prompt_positions)
    elif kind == "prompt":
      prompts = self.prompt_generator(q)             # [B, K, d]
      kw.update(prompt_embeds=prompts)
    out = self.plm(input_ids, mask, **kw)
    if kind == "prompt":  # the official pooling mask includes the prompts
      mask = jnp.concatenate(
          [jnp.ones((mask.shape[0], cfg.num_prompt), mask.dtype), mask], 1)
    return out, mask, prompts

  # ---------------------------------------------------------------- PA-MLM
  def pa_mlm(self, batch, *, deterministic: bool = True, norms=None):
    """PA-MLM: IDs in full -> prompts; masked text -> masked-token CE.

    Args:
      batch: 'ids', 'mlm_input_ids', 'attention_mask', 'mlm_labels'.
      deterministic: disables dropout.
      norms: micro-batch mode: the global batch's masked-token count (the
        loss becomes this micro-batch's share of the global mean).

    Returns:
      {'loss', 'mlm_loss', 'mlm_acc', 'mlm_masked_tokens', 'mlm_dropped'}.
    """
    cfg = self.config
    q = (self.ctr.encode(batch["ids"], deterministic=deterministic)
         if cfg.uses_q else None)
    out, mask, _ = self._encode_text(batch["mlm_input_ids"],
                                     batch["attention_mask"], q,
                                     deterministic=deterministic, hidden=False)
    hidden, labels = out["last_hidden_state"], batch["mlm_labels"]
    if cfg.prompt_kind == "prompt":  # outputs of the prompt slots: no label
      hidden = hidden[:, cfg.num_prompt:]
    hidden, labels, valid, dropped = losses.gather_masked(
        hidden, labels, cfg.mlm_max_masked)
    table = (self.plm.word_embedding_matrix() if cfg.lm_tied
             else self.lm_decoder)
    logits = self.lm_head(hidden, table)               # [B, M, V] float32
    loss, count = losses.mlm_loss(logits, labels, denominator=norms)
    hits = jnp.sum((jnp.argmax(logits, -1) == labels) & valid)
    denom = jnp.maximum(count, 1) if norms is None else norms
    return {"loss": loss, "mlm_loss": loss,
            "mlm_acc": hits.astype(jnp.float32) / denom,
            "mlm_masked_tokens": count.astype(jnp.float32),
            "mlm_dropped": dropped.astype(jnp.float32)}

  # ------------------------------------------------------------------ CTR
  def __call__(self, batch, *, deterministic: bool = True):
    """Logits of the finetuning modes.

    Returns:
      {'logit'} plus 'ctr/logit' and 'txt/logit' (modes with both) and
      'alpha' (weighted modes).
    """
    cfg = self.config
    if cfg.mode == "pretrain":
      raise ValueError("mode 'pretrain' has no CTR logit; call pa_mlm")
    uses_q, uses_plm, _, ctr_logit, plm_logit = MODES[cfg.mode]
    q = (self.ctr.encode(batch["ids"], deterministic=deterministic)
         if uses_q else None)
    out, prompts = {}, None
    if uses_plm:
      enc, mask, prompts = self._encode_text(
          batch["input_ids"], batch["attention_mask"], q,
          deterministic=deterministic, hidden=cfg.pooler != "cls")
      states = enc.get("hidden_states", (enc["last_hidden_state"],))
      pooled = prompt_lib.pool(cfg.pooler, states, mask)
      out["txt/logit"] = self.nlp_head(pooled)
    if ctr_logit:
      if cfg.prompt_usage == "no":
        feats = q
      else:
        vecs = prompt_lib.prompt_vectors(prompts, cfg.plm.hidden_size)
        feats = (jnp.mean(vecs.astype(jnp.float32), axis=1)
                 if cfg.prompt_usage == "avg"
                 else vecs.reshape(vecs.shape[0], -1))
      out["ctr/logit"] = self.ctr_head(feats.astype(jnp.float32))[..., 0]
    if ctr_logit and plm_logit:
      if cfg.weighted_add:
        a = self.alpha()
        out["logit"] = a * out["ctr/logit"] + (1.0 - a) * out["txt/logit"]
        out["alpha"] = a
      else:
        out["logit"] = out["ctr/logit"] + out["txt/logit"]
    else:
      out["logit"] = out["ctr/logit" if ctr_logit else "txt/logit"]
    return out
