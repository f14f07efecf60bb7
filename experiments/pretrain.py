r"""FLIP pretraining launcher.

  python -m experiments.pretrain --workdir runs/pre \
    --config experiments/configs/flip_pretrain.py:dataset=synthetic

Rerunning the same command on the same workdir resumes. Multi-host (TPU pod
slice, several GPU hosts): add --jax_distributed on every process (or rely on
the standard JAX coordinator environment variables); each process reads only
its shard of the data.

The one launcher (experiments.train) with this default config.
"""
from experiments import launch

main = launch.training_main("experiments/configs/flip_pretrain.py")

if __name__ == "__main__":
  launch.run_main(main)
