"""ClickPrompt (WWW 2024): CTR-model prompts for a PLM, PA-MLM, finetuning.

  model.py        ClickPromptModel (PA-MLM and every finetuning mode)
  prompt.py       prefix / input-layer prompt generators, heads, poolers
  masking.py      the 15 % 80/10/10 token masking (host-side, seeded)
  common.py       config freezing and checks, PLM, data, init, optimizer groups
  pretrain.py     ClickPromptPretrainTask (PA-MLM)
  finetune.py     ClickPromptFinetuneTask; reloading a finetuned run
  export.py       ctr_only / prefix_add to PyTorch, with a parity check
  torch_model.py  the PyTorch twin of prefix_add (and the other PLM modes)
"""
