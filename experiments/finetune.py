r"""FLIP finetuning launcher (modes id | plm | joint, and the baselines).

  python -m experiments.finetune --workdir runs/ft \
    --config experiments/configs/flip_finetune.py:dataset=synthetic,mode=joint \
    --config.ckpt.init_from runs/pre

Writes <workdir>/results.json (valid/test AUC and LogLoss at the best valid
step). Rerunning on the same workdir resumes.

The one launcher (experiments.train) with this default config.
"""
from experiments import launch

main = launch.training_main("experiments/configs/flip_finetune.py")

if __name__ == "__main__":
  launch.run_main(main)
