"""SRP4CTR (CIKM 2024): FG-BERT pretraining, uni cross-attention, queries.

  layers.py     post-LN layers exposing K/V, the cross layer, the queries
  fgbert.py     FG-BERT (token embedding, encoder) and its pretraining model
  model.py      Srp4ctrModel: SRP4CTR, its ablations, DIN; folded inference
  data.py       the run's sequence store, columns and host-side masks
  pretrain.py   Srp4ctrPretrainTask (train histories only)
  finetune.py   Srp4ctrTask (CTR, selected on valid AUC)
  torch_model.py, export.py   the final CTR model in PyTorch, with parity

Spec: ../shared/spec/CLICKPROMPT_SRP4CTR.md part B; no official code.
"""
