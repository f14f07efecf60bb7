r"""ClickPrompt step throughput: PA-MLM and prefix_add vs the same step
without prompts (full-rank DCNv2 + MiniLM-L6, batch 128, length 100).

  python -m benchmarks.clickprompt_step                     # all four forms
  python -m benchmarks.clickprompt_step --forms=pa_mlm,mlm --runs=3
  python -m benchmarks.clickprompt_step --forms=prefix_add/mb4  # 4 micro-batches

Forms: ``pa_mlm`` (PA-MLM with K layer-wise prefixes), ``mlm`` (the same
masked-LM step without prompts or CTR model), ``prefix_add`` (finetuning
with the PLM, K prefixes) and ``add`` (the same without prompts). One
jitted ``flip_jax.train.steps.train_step`` of the ClickPrompt task (AdamW
with the PLM group, donated state) on a random batch of the real shapes.
Reports compile time apart from the median step time, examples/s, model
GFLOP/s (XLA cost analysis) against the measured float32 matmul peak, and
peak memory (XLA's temporary buffers; the device's peak where it reports
one); one ``BENCH {json}`` line per form.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics

from benchmarks import step_timing

# form -> (model mode, pretraining fusion)
FORMS = {"pa_mlm": ("pretrain", "prefix"), "mlm": ("pretrain", "none"),
         "prefix_add": ("prefix_add", "prefix"), "add": ("add", "prefix")}


def run(form: str, batch: int, length: int, steps: int, plm: str, k: int,
        dtype: str = "float32", count_only: bool = False) -> dict:
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import linen as nn
  from experiments.configs import clickprompt_finetune
  from experiments.configs import clickprompt_pretrain
  from flip_jax import optim
  from flip_jax.methods.clickprompt import finetune
  from flip_jax.methods.clickprompt import model as model_lib
  from flip_jax.methods.clickprompt import pretrain
  from flip_jax.models import ctr as ctr_lib
  from flip_jax.models import plm as plm_lib
  from flip_jax.train import ctr_task
  from flip_jax.train import state as state_lib
  from flip_jax.train import steps as steps_lib
  # pylint: enable=g-import-not-at-top
  name = form
  form, micro_batches = step_timing.variant(form)
  mode, fusion = FORMS[form]
  if mode == "pretrain":
    cfg = clickprompt_pretrain.get_config("dataset=ml-1m,preset=full")
    task_cls = pretrain.ClickPromptPretrainTask
  else:
    cfg = clickprompt_finetune.get_config(f"dataset=ml-1m,preset=full,"
                                          f"mode={mode}")
    task_cls = finetune.ClickPromptFinetuneTask
  cfg.data.max_length = length
  num_fields, field_size = 8, 500
  module, plm_params, _ = plm_lib.load_pretrained(plm)
  ctr_cfg = ctr_lib.CTRConfig.from_config(
      cfg.model.ctr, num_features=num_fields * field_size,
      num_fields=num_fields)
  cp = model_lib.ClickPromptConfig(
      mode=mode, ctr=ctr_cfg, plm=module.config, num_prompt=k, fusion=fusion,
      mlm_max_masked=max(1, int(0.3 * length)), dtype=jnp.dtype(dtype))
  task = task_cls(cfg, model_lib.ClickPromptModel(cp))
  rs = np.random.RandomState(0)
  lengths = rs.randint(int(0.7 * length), length + 1, batch)
  attn = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
  tokens = np.where(attn > 0, rs.randint(1000, 30000, (batch, length)), 0)
  picked = (rs.rand(batch, length) < 0.15) & (attn > 0)
  b = {"ids": (np.arange(num_fields) * field_size + rs.randint(
      0, field_size, (batch, num_fields))).astype(np.int32),
       "input_ids": tokens.astype(np.int32), "attention_mask": attn,
       "mlm_input_ids": np.where(picked, 103, tokens).astype(np.int32),
       "mlm_labels": np.where(picked, tokens, -100).astype(np.int32),
       "label": rs.randint(0, 2, batch).astype(np.float32),
       "weight": np.ones(batch, np.float32)}
  keys = (pretrain.PRETRAIN_KEYS if mode == "pretrain"
          else task.model_keys() + ctr_task.LABEL_KEYS)
  b = {k: v for k, v in b.items() if k in keys}
  rng = state_lib.new_key(0)
  params = nn.meta.unbox(task.init_variables(rng, b, {})["params"])
  params["plm"] = plm_params
  gen = sum(np.size(x) for x in jax.tree.leaves(
      params.get("prompt_generator", {})))
  tx = optim.build_optimizer(cfg.optim, steps_per_epoch=100, total_steps=100)
  state = state_lib.create_train_state(params, tx, rng)
  res = step_timing.measure(
      lambda mb: functools.partial(steps_lib.train_step, task=task,
                                   micro_batches=mb),
      micro_batches, state, (b, {}), steps, None, count_only)
  res.update(form=name, generator_params=int(gen))
  if not count_only:
    res.pop("metrics")
    res["examples_per_s"] = batch / res["step_s"]
  return res


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--forms", default="pa_mlm,mlm,prefix_add,add")
  ap.add_argument("--runs", type=int, default=3)
  ap.add_argument("--steps", type=int, default=3)
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--length", type=int, default=100)
  ap.add_argument("--num_prompt", type=int, default=10)
  ap.add_argument("--plm", default="minilm-l6")
  ap.add_argument("--dtype", default="float32",
                  help="compute dtype of the PLM (params stay float32)")
  args = ap.parse_args()
  import jax  # pylint: disable=g-import-not-at-top
  peak = step_timing.matmul_peak_gflops(dtype=args.dtype)
  device = (f"{jax.devices()[0].device_kind} x{jax.device_count()} "
            f"({os.cpu_count()} cores)")
  print(f"device: {device}; {args.dtype} matmul peak (XLA, measured): "
        f"{peak:.0f} GFLOP/s")
  forms = args.forms.split(",")
  results = {f: [] for f in forms}
  for i in range(args.runs):  # interleaved: run i of every form, then i + 1
    for form in forms:
      r = run(form, args.batch, args.length, args.steps, args.plm,
              args.num_prompt, args.dtype)
      results[form].append(r)
      print(f"run {i} {form}: {r['examples_per_s']:.2f} ex/s", flush=True)
  for form in forms:
    res = results[form]
    med = {k: statistics.median(r[k] for r in res)
           for k in ("compile_s", "step_s", "examples_per_s", "gflop_per_step",
                     "gflops_per_s", "xla_temp_gib", "device_peak_gib")}
    med.update(form=form, batch=args.batch, length=args.length,
               num_prompt=args.num_prompt, device=device, dtype=args.dtype,
               generator_params=res[0]["generator_params"], peak_gflops=peak,
               frac_peak=med["gflops_per_s"] / peak)
    print(f"{form:<14} {med['examples_per_s']:7.2f} ex/s  "
          f"{med['step_s']:6.2f} s/step  compile {med['compile_s']:5.1f} s  "
          f"{med['gflop_per_step']:6.0f} GFLOP/step  "
          f"{med['gflops_per_s']:5.0f} GFLOP/s "
          f"({100 * med['frac_peak']:.0f}% of peak)  "
          f"temp {med['xla_temp_gib']:.2f} GiB")
    print("BENCH " + json.dumps({"bench": f"clickprompt_step/{form}", **med}))


if __name__ == "__main__":
  main()
