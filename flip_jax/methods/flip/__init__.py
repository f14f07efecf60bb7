"""FLIP: pretraining (MLM + MTM + ICL), finetuning (id / plm / joint), export.

  pretrain_model.py  FlipPretrainModel (the three losses in one pass)
  finetune_model.py  FlipCtrModel (ID model, PLM, or both mixed by alpha)
  pretrain.py        FlipPretrainTask (cached-gradient ICL micro-batches)
  finetune.py        FlipFinetuneTask; reloading a finetuned run
  export.py          the finetuned model to PyTorch, with a parity check
"""
