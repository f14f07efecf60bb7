"""One processed-data cache for every baseline test (prepared once)."""
import pytest


@pytest.fixture(scope="session")
def bl_cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("baselines_cache")
