"""The model and data presets the text methods share (FLIP, its PLM
baselines, ClickPrompt): the ID backbone + PLM section and the data sizes
of each preset. A method's config applies them with its own preset table
(``common.check_preset`` against the presets it has).
"""
import ml_collections as mlc

from experiments.configs import ctr as ctr_configs

# tiny: a smoke-test slice (seconds); cpu-small: a 10 % subsample, minutes
# on 2 CPU cores; cpu-full: every row of ML-100K (a stated share of ML-1M)
# with training budgets stated in examples, sized so that FLIP's claim-
# bearing models over 3 seeds take about 2 hours on 2 cores (RESULTS.md);
# full: the official sizes.
PRESETS = ("tiny", "cpu-small", "cpu-full", "full")
# cpu-full's share of the rows per dataset (index-based, seeded); 1.0 = all.
CPU_FULL_SUBSAMPLE = {"ml-1m": 0.25}
# The pretrained PLM's first N layers a preset keeps (None = all). tiny, a
# smoke test, keeps one (one compiled layer: the suite's end-to-end runs are
# cheaper; per-layer code is tested on two layers by the model tests). The
# demo (cpu-small on synthetic data, `make demo`) keeps one too: its four PLM stages
# then train 1.6-1.7x faster than with two, which with its budgets fits the
# main command in 4 minutes on 2 cores (RESULTS.md, "demo recipe").
PLM_LAYERS = {"tiny": 1, "cpu-small": {"synthetic": 1, "other": 2},
              "cpu-full": 2, "full": None}


def model_config(ctr: str, plm: str, preset: str,
                 dataset: str) -> mlc.ConfigDict:
  """ID backbone and PLM; shared with the finetuning config."""
  layers = PLM_LAYERS[preset]
  if isinstance(layers, dict):
    layers = layers["synthetic" if dataset == "synthetic" else "other"]
  m = mlc.ConfigDict()
  # Every backbone field with its default (embedding 32, DNN 300-300-128,
  # two cross layers of rank 32 with 4 experts, no dropout); BatchNorm
  # backbones (dnn_use_bn, AFN) keep their running statistics in the
  # train state.
  m.ctr = ctr_configs.model_config(ctr)
  m.plm = mlc.ConfigDict({
      # 'minilm-l6' (offline default) or a local Hugging Face folder.
      "name": plm,
      # Keep only the first N layers of the pretrained PLM (None = all).
      "num_layers": mlc.config_dict.placeholder(int) if layers is None
                    else layers,
      # Override the checkpoint's dropout (None = keep the HF config's).
      "dropout": mlc.config_dict.placeholder(float),
      # Override the attention-probability dropout alone (None = as above).
      "attention_dropout": mlc.config_dict.placeholder(float),
      # 'xla', 'fused' (jax.nn.dot_product_attention with XLA's own
      # implementation) or 'cudnn' (the same asking for cuDNN's kernel on
      # GPUs in bf16; trains only with attention_dropout=0).
      "attention": "xla",
      # Random bits per dropped element: 32 (flax's draw), or 16 / 8 for
      # cheaper masks (rate rounded to a multiple of 2**-bits; other draws;
      # benchmarks/README.md has the A/B).
      "dropout_bits": 32,
      # One matmul for query, key and value (the three kernels concatenated
      # at apply time; same params, HF import and export).
      "fused_qkv": False,
      "remat": False,
  })
  # Compute dtype of the PLM and heads; params stay float32.
  m.dtype = "float32"
  return m


def apply_data_preset(data: mlc.ConfigDict, dataset: str, preset: str):
  """Sizes of the data for a preset (shared with the finetuning config).

  See PRESETS.
  """
  if preset == "tiny":
    data.max_length = 40
    if dataset == "synthetic":
      data.synthetic.num_users = 100
      data.synthetic.num_movies = 80
      data.synthetic.num_ratings = 2400
    else:
      data.subsample = 0.01
  elif preset in ("cpu-small", "cpu-full"):
    data.max_length = 64
    if dataset == "synthetic":
      data.synthetic.num_ratings = 12000
    elif preset == "cpu-small":
      # A 10% index-based subsample keeps PLM evaluation affordable on CPU.
      data.subsample = 0.1
    else:
      data.subsample = CPU_FULL_SUBSAMPLE.get(dataset, 1.0)
  return data
