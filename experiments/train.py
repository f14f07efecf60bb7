r"""The one training launcher: any task of ``flip_jax.methods.TASKS``.

  python -m experiments.train --workdir runs/pre \
    --config experiments/configs/flip_pretrain.py:dataset=synthetic
  python -m experiments.train --workdir runs/ft \
    --config experiments/configs/flip_finetune.py:dataset=synthetic,mode=joint \
    --config.ckpt.init_from runs/pre
  python -m experiments.train --workdir runs/dcnv2 \
    --config experiments/configs/ctr.py:dataset=ml-1m,model=dcnv2 \
    --config.data.data_dir ../shared/data/ml-1m

``config.task`` names the task. Rerunning the same command on the same
workdir resumes. Multi-host (TPU pod slice, several GPU hosts): add
--jax_distributed on every process (or rely on the standard JAX coordinator
environment variables); each process reads only its shard of the data.
``experiments.pretrain``, ``experiments.finetune`` and
``experiments.train_ctr`` are this launcher with another default config
(``launch.training_main``).
"""
from experiments import launch

main = launch.training_main(None)

if __name__ == "__main__":
  launch.run_main(main)
