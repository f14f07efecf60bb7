r"""Trains an ID-based CTR backbone from scratch (the ``ctr`` task).

  python -m experiments.train_ctr --workdir runs/dcnv2_ml1m \
    --config experiments/configs/ctr.py:dataset=ml-1m,model=dcnv2 \
    --config.data.data_dir=../shared/data/ml-1m

The shared launcher (experiments.train) with ``configs/ctr.py`` as its
default config: the shared loop gives the run checkpoints, resume (rerun the
same command), TensorBoard, early stopping on valid AUC with the best
checkpoint reloaded and the test split evaluated once (``results.json``).
"""
from experiments import launch

main = launch.training_main("experiments/configs/ctr.py")

if __name__ == "__main__":
  launch.run_main(main)
