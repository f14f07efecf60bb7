"""The paper's PLM baselines (FLIP.md 7) as tasks on the shared loop.

  towers.py    CTR-BERT's user and item texts, cut from each row's prompt
  ctr_bert.py  CtrBertTask: two PLM towers -> [CLS] states -> MLP -> logit
  p_tab.py     PTabPretrainTask: P-Tab's token-level MLM (stage 1); stage 2
               is FLIP's finetuning in mode 'plm' with ckpt.init_from
"""
